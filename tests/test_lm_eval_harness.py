"""lm-evaluation-harness on an exported checkpoint: a model trained by this project's driver,
exported with `tools/convert_checkpoint.py export-hf` (and its SentencePiece tokenizer), scored
by the harness's `hf` backend on the CPU on a multiple-choice task defined in a local YAML file
over a local JSONL file. Nothing is downloaded (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). The
harness's per-choice log-likelihoods and accuracy must equal this project's own, computed on the
distributed checkpoint (megatron-core model, training tokenizer), so both the export and the
harness run are checked."""

import json
import os

import pytest

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

import lm_eval  # noqa: F401  (setup.py's test extra: a missing harness fails, not skips)

TASK = "prealign_tiny_mc"
# Short (the model's 32 positions hold context and choice) and in the corpus's vocabulary.
DOCS = [
    {"context": "The old dog sees a", "choices": ["red ball", "river", "school"], "label": 0},
    {"context": "Der Hund sieht einen", "choices": ["roten Ball", "the morning", "of"], "label": 0},
    {"context": "They walk to the", "choices": ["school", "ist", "Fluss und"], "label": 0},
    {"context": "In the morning the", "choices": ["children", "bank by", "mit"], "label": 1},
    {"context": "She said that the", "choices": ["water", "house is", "nicht"], "label": 2},
    {"context": "A small", "choices": ["house", "auf", "very old tree"], "label": 0},
]
TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _prepare(assets, directory):
    """The English corpus, preprocessed without codeswitching (one tool run)."""
    from megatron_prealign.cli import preprocess_data

    prefix = os.path.join(directory, "en")
    assert preprocess_data.main([
        "--input", assets["en"], "--output-prefix", prefix, "--json-keys", "text",
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"],
        "--append-eod", "--codeswitch-mode", "none", "--no-progress"]) == 0
    return prefix + "_text_document"


def _train_export_score(assets, data_prefix, work, task_dir):
    """Rank body: train 2 iterations, export with the tool, score every (context, choice) with
    the megatron-core model as the harness does (context + " " + choice tokenized whole, the
    tokens after the context's are the continuation), then run the harness on the export (in
    this process: one interpreter start less)."""
    import torch

    from megatron_prealign import pretrain
    from megatron_prealign.cli import convert_checkpoint
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.generation.model_loading import load_model, sequence_nll

    ckpt, out = os.path.join(work, "ckpt"), os.path.join(work, "hf")
    data = {"sp": assets["sp"], "en_cs": data_prefix, "de": data_prefix}  # replaced below
    argv = pretrain_case.base_argv(data, work, train_iters=2, save=ckpt,
                                   hidden_dropout=0.0, attention_dropout=0.0)
    at = argv.index("--data-path")
    argv[at + 1 : at + 5] = [data_prefix]
    assert pretrain.main(argv) == 0
    assert convert_checkpoint.main([
        "export-hf", "--load", ckpt, "--out", out, "--tokenizer-type", "SentencePieceTokenizer",
        "--tokenizer-model", assets["sp"], "--no-progress"]) == 0
    tokenizer = build_tokenizer("SentencePieceTokenizer", assets["sp"])
    rows = []
    for doc in DOCS:
        context = list(tokenizer.tokenize(doc["context"]))
        for choice in doc["choices"]:
            whole = list(tokenizer.tokenize(doc["context"] + " " + choice))
            assert whole[: len(context)] == context
            rows.append((whole, len(whole) - len(context)))
    width = max(len(w) for w, _ in rows) - 1
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.zeros_like(tokens)
    mask = torch.zeros(len(rows), width)
    for r, (whole, n_cont) in enumerate(rows):
        n = len(whole) - 1
        tokens[r, :n] = torch.tensor(whole[:-1])
        labels[r, :n] = torch.tensor(whole[1:])
        mask[r, n - n_cont : n] = 1  # the continuation's tokens
    nll = sequence_nll(load_model(ckpt, 1, 1), tokens, labels, mask)
    ours = [-float(v) for v in nll[:, 0]]

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(model="hf", model_args=f"pretrained={out},dtype=float32", tasks=[TASK],
                              device="cpu", batch_size=8, log_samples=True,
                              task_manager=TaskManager(include_path=task_dir))
    samples = sorted(results["samples"][TASK], key=lambda sample: sample["doc_id"])
    theirs = [float(resp[0][0]) for sample in samples for resp in sample["resps"]]
    return {"ours": ours, "theirs": theirs, "acc": results["results"][TASK]["acc,none"]}


def test_harness_scores_exported_checkpoint_as_we_do(assets, tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")  # read by the rank process at its imports
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # the datasets cache
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    jsonl = tasks / "tiny_mc.jsonl"
    jsonl.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=jsonl))
    data_prefix = _prepare(assets, str(tmp_path))
    got = run_distributed(_train_export_score, 1, assets, data_prefix, str(tmp_path), str(tasks))[0]
    ours, theirs = got["ours"], got["theirs"]
    assert len(theirs) == len(ours) == sum(len(d["choices"]) for d in DOCS)
    for k, (a, b) in enumerate(zip(theirs, ours)):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"choice {k}: harness {a} != ours {b}"
    at, correct = 0, 0
    for doc in DOCS:
        scores = ours[at : at + len(doc["choices"])]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
        at += len(doc["choices"])
    assert got["acc"] == pytest.approx(correct / len(DOCS))
