"""tools/evaluate.py: every evaluation on a tiny checkpoint saved at TP=2 and evaluated at TP=1,
TP=2 and PP=2 (same numbers), atomic JSON output, and bad input (another architecture, a table
of another tokenizer, empty evaluation sets) refused with a clear message."""

import json
import math
import os

import pytest

from megatron_prealign.testing import pretrain_case
from tests.dist_utils import run_distributed

HELD_OUT = 0.3


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("evaluation"))
    data = pretrain_case.prepare_data(os.path.join(root, "data"))
    work = os.path.join(root, "train")
    os.makedirs(work)
    flags = dict(pretrain_case.alignment_flags(data), prealign_iters=2,
                 alignment_held_out_fraction=HELD_OUT, tensor_model_parallel_size=2,
                 save=os.path.join(work, "ckpt"))
    argv = pretrain_case.base_argv(data, work, train_iters=2, **flags)
    run_distributed(pretrain_case.run_pretrain, 2, argv)
    with open(os.path.join(root, "clka.jsonl"), "w") as f:
        f.write(json.dumps({"true": "The river was in the city.", "distractors": [
            "The river was in the bank.", "The river was in the house.", "The river was in the tree."]}) + "\n")
        f.write(json.dumps({"choices": ["The man is new.", "The man is water."], "answer": 1}) + "\n")
    with open(os.path.join(root, "prompts.jsonl"), "w") as f:
        for text in ("The river", "Money and", "When the"):
            f.write(json.dumps({"text": text}) + "\n")
    open(os.path.join(root, "empty.jsonl"), "w").close()
    return {"root": root, "data": data, "ckpt": os.path.join(work, "ckpt")}


def _argvs(case, tag, layout):
    data, root = case["data"], case["root"]
    tok = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", data["sp"]]
    common = ["--load", case["ckpt"], *layout, "--micro-batch-size", "4"]
    out = lambda name: ["--output", os.path.join(root, f"{tag}_{name}.json")]  # noqa: E731
    return {
        "perplexity": ["perplexity", *common, *out("ppl"), "--data-path", f"en={data['en']}",
                       f"de={data['de']}", "--max-tokens", "600", "--jsonl", f"de_text={data['de'].replace('de_text_document', 'assets/de.jsonl')}",
                       *tok],
        "perplexity bos": ["perplexity", *common, *out("ppl_bos"), "--max-tokens", "600", "--add-bos",
                           "--jsonl", f"de_text={data['de'].replace('de_text_document', 'assets/de.jsonl')}",
                           *tok],
        "alignment": ["alignment", *common, *out("align"), *tok, "--alignment-table", data["table"],
                      "--alignment-languages", "de", "--alignment-held-out-fraction", str(HELD_OUT),
                      "--words-per-batch", "8", "--plot", os.path.join(root, f"{tag}_align.png")],
        "clka": ["clka", *common, *out("clka"), *tok, "--input", os.path.join(root, "clka.jsonl")],
        "mixed-script": ["mixed-script", *common, *out("mixed"), *tok,
                         "--input", os.path.join(root, "prompts.jsonl"), "--max-new-tokens", "4",
                         "--other-token-pattern", "[äöüß]|Fluss|Geld|Wasser"],
    }


def _evaluate_rank(runs):
    """Rank body: run each (name, argv) in this process; bad-input runs return their error."""
    from megatron_prealign.cli import evaluate as cli
    from megatron_prealign.errors import EvaluationError

    results = {}
    for name, argv in runs:
        try:
            result = cli.run(cli.build_parser().parse_args(argv))
            for key in ("per_item", "elapsed_s", "plot"):  # per item / per rank
                result.pop(key, None)
            results[name] = json.dumps(result)
        except EvaluationError as error:
            results[name] = "error: " + str(error)
    return results


@pytest.fixture(scope="module")
def evaluated(case):
    tp2 = _argvs(case, "tp2", ["--tensor-model-parallel-size", "2"])
    pp2 = _argvs(case, "pp2", ["--pipeline-model-parallel-size", "2"])
    on_two = run_distributed(_evaluate_rank, 2, [(f"tp2 {k}", v) for k, v in tp2.items()]
                             + [(f"pp2 {k}", v) for k, v in pp2.items()])
    tp1 = _argvs(case, "tp1", [])
    bad = _bad_input_runs(case, tp1)
    on_one = run_distributed(_evaluate_rank, 1, [(f"tp1 {k}", v) for k, v in tp1.items()] + bad)
    results = {**on_two[0], **on_one[0]}
    assert on_two[0] == on_two[1]  # every rank returns the same numbers
    return {k: (json.loads(v) if not v.startswith("error: ") else v) for k, v in results.items()}


def _bad_input_runs(case, tp1):
    data, root = case["data"], case["root"]
    from megatron_prealign.data.alignment_table import read_table, write_table
    from megatron_prealign.data.enclone import EncloneMapping, clone_table, default_shared_ids
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import build_tokenizer

    # An En-Clone table made with the other (byte-level BPE) tokenizer of the assets.
    encoder = TextEncoder(build_tokenizer("HuggingFaceTokenizer", data["hf"]))
    mapping = EncloneMapping(encoder.vocab_size, default_shared_ids(encoder))
    other = os.path.join(root, "table_other_tokenizer.jsonl")
    write_table(other, clone_table(read_table(data["table"]), encoder, mapping))
    empty = os.path.join(root, "empty.jsonl")

    def with_(argv, **changes):
        argv = list(argv)
        for flag, value in changes.items():
            flag = "--" + flag.replace("_", "-")
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        return argv

    return [
        ("bad architecture", with_(tp1["perplexity"], num_layers="3")),
        ("bad table tokenizer", with_(tp1["alignment"], alignment_table=other, alignment_languages="enclone")),
        ("bad empty clka", with_(tp1["clka"], input=empty)),
        ("bad empty jsonl", ["perplexity", "--load", case["ckpt"], "--output", os.path.join(root, "x.json"),
                             "--jsonl", empty, "--tokenizer-type", "SentencePieceTokenizer",
                             "--tokenizer-model", data["sp"]]),
        ("bad empty table", with_(tp1["alignment"], alignment_table=empty)),
    ]


def test_perplexity_same_at_tp1_tp2_pp2(evaluated):
    reference = evaluated["tp1 perplexity"]["sources"]
    assert set(reference) == {"en", "de", "de_text"}
    for name, values in reference.items():
        assert values["tokens"] == 600 and 1 < values["perplexity"] < 1e4
        for layout in ("tp2", "pp2"):
            other = evaluated[f"{layout} perplexity"]["sources"][name]
            assert math.isclose(other["perplexity"], values["perplexity"], rel_tol=1e-5), (layout, name)
    # The JSON-lines text and its indexed dataset are the same tokens.
    assert math.isclose(reference["de"]["perplexity"], reference["de_text"]["perplexity"], rel_tol=1e-6)
    # --add-bos: every text begins with the BOS, which is not scored (fewer scored tokens in the
    # same window), the same at every layout.
    with_bos = evaluated["tp1 perplexity bos"]["sources"]["de_text"]
    assert with_bos["tokens"] < 600 and with_bos["perplexity"] != reference["de_text"]["perplexity"]
    for layout in ("tp2", "pp2"):
        other = evaluated[f"{layout} perplexity bos"]["sources"]["de_text"]
        assert math.isclose(other["perplexity"], with_bos["perplexity"], rel_tol=1e-5), layout


def test_results_written_atomically(case, evaluated):
    root = case["root"]
    with open(os.path.join(root, "tp1_ppl.json")) as f:
        assert json.load(f)["sources"]["en"]["perplexity"] == evaluated["tp1 perplexity"]["sources"]["en"]["perplexity"]
    assert not [n for n in os.listdir(root) if ".tmp" in n]


def test_alignment_seen_unseen_and_plot(case, evaluated):
    result = evaluated["tp1 alignment"]
    assert len(result["states"]) == 2 + 2
    seen, unseen = result["splits"]["seen"], result["splits"]["unseen"]
    assert seen["words"] > 0 and unseen["words"] > 0
    for split in (seen, unseen):
        assert len(split["aligned"]) == 4 and all(-1 <= v <= 1 for v in split["aligned"])
    for layout in ("tp2", "pp2"):
        other = evaluated[f"{layout} alignment"]["splits"]["seen"]["aligned"]
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(seen["aligned"], other)), layout
    with open(os.path.join(case["root"], "tp1_align.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_clka_accuracy_with_interval(evaluated):
    result = evaluated["tp1 clka"]
    assert result["items"] == 2 and 0 <= result["accuracy"] <= 1
    low, high = result["ci95"]
    assert 0 <= low <= result["accuracy"] <= high <= 1
    assert result["chance"] == pytest.approx((0.25 + 0.5) / 2)
    for layout in ("tp2", "pp2"):
        assert evaluated[f"{layout} clka"]["accuracy"] == result["accuracy"]


def test_mixed_script(evaluated):
    result = evaluated["tp1 mixed-script"]
    assert result["prompts"] == 3 and result["decoding"] == "greedy"
    assert all(1 <= len(c) <= 4 for c in result["continuations"])
    assert 0 <= result["mixed_ratio"] <= 1
    for layout in ("tp2", "pp2"):
        assert result["continuations"] == evaluated[f"{layout} mixed-script"]["continuations"], layout


@pytest.mark.parametrize("name, message", [
    ("bad architecture", "another architecture (num_layers: checkpoint 2 vs requested 3)"),
    ("bad table tokenizer", "another tokenizer"),
    ("bad empty clka", "is empty"),
    ("bad empty jsonl", "is empty"),
    ("bad empty table", "empty"),
])
def test_bad_input(evaluated, name, message):
    assert isinstance(evaluated[name], str) and message in evaluated[name], evaluated[name]


def test_wilson_interval():
    from megatron_prealign.evaluation.common import wilson_interval

    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
