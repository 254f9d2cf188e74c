"""Zero-shot cross-lingual transfer (PreAlign's ZS-CLT protocol) on XNLI-style classification.

Data: premise, hypothesis, label per example, as JSON lines (``{"premise", "hypothesis",
"label"}``) or TSV with a header (XNLI / MultiNLI column names are accepted: ``sentence1`` /
``sentence2`` / ``gold_label``, ``hypo``; a ``language`` column splits a multi-language file such
as ``xnli.test.tsv``). Numeric XNLI labels 0/1/2 mean entailment / neutral / contradiction;
XNLI-MT's training files (``multinli.train.LANG.tsv``: ``premise hypo label``) spell the third
label ``contradictory``, read as ``contradiction``.

Each example is an instruction record (the English instruction below; input "Premise: ...
Hypothesis: ..."), rendered with the instruction template; the prediction is the label word whose
tokens are most likely as the response (summed log-likelihood, no generation; ties are wrong).
Accuracy per language comes with a 95% Wilson interval. The prompt-only variant scores the
checkpoint as is; the transfer variant first fine-tunes it on the English training split with
the label words as responses (the instruction-tuning stage) and then scores the fine-tuned model.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from megatron_prealign.evaluation.common import wilson_interval
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel, sequence_nll

XNLI_LABELS = ("entailment", "neutral", "contradiction")
NLI_INSTRUCTION = ("Decide whether the premise entails the hypothesis. Answer with one word: "
                   "{labels}.")
COLUMNS = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "hypo", "sentence2"),
           "label": ("label", "gold_label")}
# XNLI-MT 1.0's training files say "contradictory" where the XNLI dev / test files say
# "contradiction": one label word, else the transfer run would see four classes.
LABEL_SPELLINGS = {"contradictory": "contradiction"}


def _label(value) -> str:
    text = str(value).strip()
    if text.isdigit() and int(text) < len(XNLI_LABELS):
        return XNLI_LABELS[int(text)]
    return LABEL_SPELLINGS.get(text, text)


def _pick(record: dict, field: str, path: str, number: int) -> str:
    for key in COLUMNS[field]:
        if key in record and record[key] is not None:
            return str(record[key])
    raise EvaluationError(f"{path}: example {number} has no {field} (one of {', '.join(COLUMNS[field])})")


def read_examples(path: str, flag: str, language: Optional[str] = None) -> List[Dict]:
    """[{"premise", "hypothesis", "label", "language"?}]; ``language`` keeps only that language
    of a file with a language column/key."""
    from megatron_prealign.evaluation.common import read_jsonl

    if not os.path.isfile(path):
        raise EvaluationError(f"{flag} {path} does not exist")
    if path.endswith((".tsv", ".txt")):
        with open(path, encoding="utf-8", newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        records = read_jsonl(path, flag)
    examples = []
    for number, record in enumerate(records, 1):
        if language is not None and "language" in record and record["language"] != language:
            continue
        examples.append({"premise": _pick(record, "premise", path, number),
                         "hypothesis": _pick(record, "hypothesis", path, number),
                         "label": _label(_pick(record, "label", path, number))})
    if not examples:
        raise EvaluationError(f"{flag} {path} has no examples" + (f" of language {language}" if language else "")
                              + " (empty evaluation set)")
    return examples


def check_labels(label_words: Sequence[str], sets: Dict[str, List[Dict]]):
    known = set(label_words)
    for name, examples in sets.items():
        unseen = sorted({e["label"] for e in examples} - known)
        if unseen:
            raise EvaluationError(
                f"{name}: labels {unseen} are not among the label words {sorted(known)} (the "
                "training split's labels / --label-words): fix the file or give --label-words")


def record(example: Dict, label_words: Sequence[str]) -> Dict:
    """The instruction record of an example (response: its label word)."""
    return {"instruction": NLI_INSTRUCTION.format(labels=", ".join(label_words)),
            "input": f"Premise: {example['premise']}\nHypothesis: {example['hypothesis']}",
            "output": example["label"]}


def continuation_loglik(model: LoadedModel, prefixes: Sequence[np.ndarray], continuations: Sequence[np.ndarray],
                        micro_batch_size: int = 8) -> np.ndarray:
    """Summed log-likelihood of each continuation's tokens after its prefix."""
    seqs = [np.concatenate([p, c]) for p, c in zip(prefixes, continuations)]
    longest = max(len(s) for s in seqs) - 1
    if longest > model.seq_length:
        raise EvaluationError(f"a prompt plus label word has {longest + 1} tokens, more than the model's "
                              f"sequence length {model.seq_length}: shorten the examples")
    tokens = torch.zeros(len(seqs), longest, dtype=torch.long)
    labels = torch.zeros_like(tokens)
    mask = torch.zeros_like(tokens)
    for row, (seq, prefix) in enumerate(zip(seqs, prefixes)):
        n = len(seq) - 1
        tokens[row, :n] = torch.from_numpy(np.asarray(seq[:-1]))
        labels[row, :n] = torch.from_numpy(np.asarray(seq[1:]))
        mask[row, len(prefix) - 1:n] = 1
    return -sequence_nll(model, tokens, labels, mask, micro_batch_size).numpy()[:, 0]


def evaluate_language(model: LoadedModel, examples: List[Dict], label_words: Sequence[str], to_ids,
                      template, micro_batch_size: int = 8) -> Dict:
    prompt_ids = [to_ids(template.render(r["instruction"], r["input"])[0])
                  for r in (record(e, label_words) for e in examples)]
    word_ids = [to_ids(template.render("", "", w)[1], bos=False) for w in label_words]
    if any(len(w) == 0 for w in word_ids):
        raise EvaluationError("a label word tokenizes to nothing")
    prefixes = [p for p in prompt_ids for _ in label_words]
    continuations = [w for _ in prompt_ids for w in word_ids]
    scores = continuation_loglik(model, prefixes, continuations, micro_batch_size).reshape(len(examples), -1)
    correct, per_item = 0, []
    for example, row in zip(examples, scores):
        best = int(np.argmax(row))
        ok = label_words[best] == example["label"] and int((row == row[best]).sum()) == 1
        correct += ok
        per_item.append({"label": example["label"], "predicted": label_words[best], "correct": bool(ok)})
    low, high = wilson_interval(correct, len(examples))
    return {"accuracy": correct / len(examples), "correct": correct, "examples": len(examples),
            "ci95": [low, high], "chance": 1.0 / len(label_words), "per_item": per_item}


def label_words_from(train: Optional[List[Dict]], given: Optional[Sequence[str]]) -> List[str]:
    if given:
        return list(dict.fromkeys(given))
    if train:
        return sorted({e["label"] for e in train}, key=lambda w: (XNLI_LABELS + (w,)).index(w))
    return list(XNLI_LABELS)


def write_instruction_records(path: str, examples: List[Dict], label_words: Sequence[str]) -> str:
    """The training split as instruction records (JSON lines), the input of the
    instruction-tuning stage."""
    from megatron_prealign.data.atomic import atomic_text_writer

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_text_writer(path) as handle:
        for example in examples:
            handle.write(json.dumps(record(example, label_words), ensure_ascii=False) + "\n")
    return path


def named_paths(values: Sequence[str], flag: str) -> List[Tuple[str, str]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name:
            raise EvaluationError(f"{flag} {value!r}: give LANG=FILE")
        out.append((name, path))
    return out


def _tokenizer_settings(args) -> dict:
    """The evaluation's tokenizer flags as training settings."""
    settings = {"tokenizer_type": args.tokenizer_type}
    for name in ("tokenizer_model", "vocab_file", "merge_file", "vocab_size"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    return settings


def finetune(args, records_path: str, seq_length: int) -> str:
    """The transfer variant's fine-tuning: the English instruction records through
    ``tools/build_instruction_data.py`` (answer-only loss masks) and the training driver's
    instruction-tuning stage (``--sft --pretrained-checkpoint``) at the evaluation's TP / PP
    layout. Returns the checkpoint root, kept in ``--finetune-dir``."""
    import torch.distributed as dist

    from megatron_prealign import runtime
    from megatron_prealign.data.bad_input import BadInputError
    from megatron_prealign.data.tokenizer import spec_from_args
    from megatron_prealign.generation.model_loading import read_architecture
    from megatron_prealign.instruct.build import BuildSettings, run_build
    from megatron_prealign.instruct.sources import make_source
    from megatron_prealign.instruct.templates import ALPACA, PromptTemplate, TemplateError

    architecture = read_architecture(args.load, args.iteration, trusted=args.trusted_checkpoint)["architecture"]
    work = os.path.abspath(args.finetune_dir or os.path.splitext(args.output)[0] + ".finetuned")
    prefix = os.path.join(work, "data", "zs_clt_train")
    # Rank 0 builds the data while the others wait in the broadcast of its outcome (the process
    # group is the one the fine-tuning below runs in).
    runtime.initialize(seed=args.seed)
    failure = [None]
    if runtime.rank_zero():
        try:
            os.makedirs(os.path.dirname(prefix), exist_ok=True)
            template = PromptTemplate.from_file(args.template) if args.template else ALPACA
            source = make_source("zs_clt_train", "alpaca", [records_path], lang="en")
            run_build(BuildSettings(spec_from_args(args), [source], template, seq_length), prefix, progress=False)
        except (BadInputError, FileNotFoundError, TemplateError, ValueError, OSError) as error:
            failure = [f"building the fine-tuning data from {records_path} failed: {error}"]
    dist.broadcast_object_list(failure, src=0)
    if failure[0]:
        raise EvaluationError(failure[0])
    train = dict(
        model_family=architecture["family"], num_layers=architecture["num_layers"],
        hidden_size=architecture["hidden_size"], num_attention_heads=architecture["num_attention_heads"],
        seq_length=seq_length, hidden_dropout=0.0, attention_dropout=0.0,
        padded_vocab_size=architecture["vocab_size"],
        micro_batch_size=args.finetune_micro_batch_size, global_batch_size=args.finetune_global_batch_size,
        train_epochs=args.finetune_epochs, lr=args.finetune_lr, min_lr=args.finetune_lr / 10,
        lr_warmup_fraction=0.03, weight_decay=0.0, seed=args.seed,
        data_path=[prefix + "_text_document"], split="100,0,0",
        sft=True, pretrained_checkpoint=args.load, save=os.path.join(work, "checkpoint"),
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        log_json=os.path.join(work, "log.jsonl"), **_tokenizer_settings(args),
    )
    for key in ("num_query_groups", "ffn_hidden_size"):
        if architecture.get(key):
            train[key] = architecture[key]
    positions = architecture.get("max_position_embeddings")
    if architecture["family"] == "gpt2":
        from megatron_prealign.generation.model_loading import _checkpoint_directory, _saved_position_rows

        positions = _saved_position_rows(_checkpoint_directory(args.load, args.iteration)) or positions
    if positions:
        if seq_length > positions:
            raise EvaluationError(f"--finetune-seq-length {seq_length} exceeds the checkpoint's "
                                  f"{positions} positions")
        train["max_position_embeddings"] = positions
    if args.bf16:
        train["bf16"] = True
    from megatron_prealign.training import arguments, loop

    try:
        loop.run(arguments.config(**train))
    except (ValueError, FileNotFoundError) as error:
        raise EvaluationError(f"fine-tuning on {records_path} failed: {error}") from error
    return os.path.join(work, "checkpoint")
