"""Cross-lingual knowledge application (CLKA): multiple choice by likelihood.

Each item is one true statement and distractors (the paper: three, the object entity
substituted), as JSON lines, either ``{"choices": [...], "answer": k}`` or
``{"true": "...", "distractors": ["...", ...]}``. Every statement is scored by its
log-likelihood under the model (all its tokens after a leading end-of-document token; or the
mean per token with ``normalize``); an item is correct when the true statement scores highest
(ties count as wrong). Accuracy comes with a 95% Wilson interval.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from megatron_prealign.evaluation.common import wilson_interval
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel, sequence_nll


def parse_items(records: List[dict], path: str = "") -> List[dict]:
    items = []
    for number, record in enumerate(records, 1):
        if "choices" in record:
            choices, answer = record["choices"], record.get("answer")
        elif "true" in record:
            choices, answer = [record["true"], *record.get("distractors", [])], 0
        else:
            raise EvaluationError(f"{path} item {number}: needs 'choices' + 'answer' or 'true' + 'distractors'")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise EvaluationError(f"{path} item {number}: needs at least two non-empty statements")
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise EvaluationError(f"{path} item {number}: 'answer' must index 'choices'")
        items.append({"choices": choices, "answer": answer})
    if not items:
        raise EvaluationError(f"{path}: no items (empty evaluation set)")
    return items


def score_statements(model: LoadedModel, statements: List[np.ndarray], eod, normalize: bool,
                     micro_batch_size: int = 8) -> np.ndarray:
    seqs = [np.concatenate([[eod], s]) if eod is not None else s for s in statements]
    longest = max(len(s) for s in seqs)
    if longest - 1 > model.seq_length:
        raise EvaluationError(f"a statement has {longest - 1} tokens, more than --seq-length {model.seq_length}")
    s = model.seq_length
    tokens = torch.zeros(len(seqs), s, dtype=torch.long)
    labels = torch.zeros(len(seqs), s, dtype=torch.long)
    mask = torch.zeros(len(seqs), s, dtype=torch.long)
    for row, seq in enumerate(seqs):
        n = len(seq) - 1
        tokens[row, :n] = torch.from_numpy(np.asarray(seq[:-1]))
        labels[row, :n] = torch.from_numpy(np.asarray(seq[1:]))
        mask[row, :n] = 1
    sums = sequence_nll(model, tokens, labels, mask, micro_batch_size).numpy()
    loglik = -sums[:, 0]
    return loglik / np.maximum(sums[:, 1], 1) if normalize else loglik


def evaluate_clka(model: LoadedModel, items: List[dict], to_ids, normalize: bool = False,
                  micro_batch_size: int = 8) -> Dict:
    statements, owners = [], []
    for index, item in enumerate(items):
        for choice in item["choices"]:
            statements.append(to_ids(choice))
            owners.append(index)
    if any(len(s) == 0 for s in statements):
        raise EvaluationError("a statement tokenizes to nothing")
    scores = score_statements(model, statements, to_ids.eod, normalize, micro_batch_size)
    correct, position = 0, 0
    per_item = []
    for item in items:
        k = len(item["choices"])
        item_scores = scores[position:position + k]
        position += k
        best = int(np.argmax(item_scores))
        ok = best == item["answer"] and int((item_scores == item_scores[best]).sum()) == 1
        correct += ok
        per_item.append({"scores": [float(v) for v in item_scores], "correct": bool(ok)})
    total = len(items)
    low, high = wilson_interval(correct, total)
    chance = float(np.mean([1.0 / len(item["choices"]) for item in items]))
    return {"accuracy": correct / total, "correct": correct, "items": total,
            "ci95": [low, high], "chance": chance, "normalize": normalize, "per_item": per_item}
