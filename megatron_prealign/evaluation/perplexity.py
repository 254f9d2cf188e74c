"""Token-level perplexity of a checkpoint, per language / data source.

Sources are megatron-core indexed datasets (a prefix, as ``--data-path``; a ``_loss_mask``
sibling is honoured: masked tokens are not scored) or JSON lines of text. Each source's documents
are concatenated in order into one token stream and cut into non-overlapping windows of
``seq_length + 1`` tokens (the last one padded and masked), the usual LM evaluation.
perplexity = exp(sum of token NLL / number of scored tokens).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data.lm_dataset import open_loss_mask
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel, sequence_nll


def indexed_stream(prefix: str, max_tokens: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(tokens, target mask) of an indexed dataset, documents in order."""
    if not IndexedDataset.exists(prefix):
        raise EvaluationError(f"{prefix}.bin / .idx do not exist (give the prefix without .bin/.idx)")
    data = IndexedDataset(prefix)
    masks = open_loss_mask(prefix, data)
    tokens, mask, total = [], [], 0
    for i in range(len(data)):
        ids = np.asarray(data[i], dtype=np.int64)
        tokens.append(ids)
        mask.append(np.asarray(masks[i], dtype=np.int64) if masks is not None else np.ones_like(ids))
        total += ids.size
        if max_tokens and total >= max_tokens + 1:
            break
    if not tokens or total == 0:
        raise EvaluationError(f"{prefix}: no tokens to evaluate")
    return np.concatenate(tokens), np.concatenate(mask)


def text_stream(texts: List[str], to_ids, max_tokens: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    tokens, masks, total = [], [], 0
    for text in texts:
        ids = to_ids(text)
        if to_ids.eod is not None:
            ids = np.append(ids, to_ids.eod)
        mask = np.ones_like(ids)
        if to_ids.bos is not None:
            mask[0] = 0  # the BOS (--add-bos) is given, not predicted
        tokens.append(ids)
        masks.append(mask)
        total += ids.size
        if max_tokens and total >= max_tokens + 1:
            break
    if total == 0:
        raise EvaluationError("no text to evaluate (empty evaluation set)")
    return np.concatenate(tokens), np.concatenate(masks)


def windows(tokens: np.ndarray, mask: np.ndarray, seq_length: int, max_tokens: Optional[int]):
    """[n, s] inputs, labels and label masks of non-overlapping windows."""
    if max_tokens:
        tokens, mask = tokens[: max_tokens + 1], mask[: max_tokens + 1]
    if tokens.size < 2:
        raise EvaluationError("fewer than two tokens: nothing to predict")
    inputs, labels, label_mask = tokens[:-1], tokens[1:], mask[1:]
    n = -(-inputs.size // seq_length)
    pad = n * seq_length - inputs.size
    inputs = np.concatenate([inputs, np.zeros(pad, dtype=np.int64)]).reshape(n, seq_length)
    labels = np.concatenate([labels, np.zeros(pad, dtype=np.int64)]).reshape(n, seq_length)
    label_mask = np.concatenate([label_mask, np.zeros(pad, dtype=np.int64)]).reshape(n, seq_length)
    return torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(label_mask)


def evaluate_stream(model: LoadedModel, tokens: np.ndarray, mask: np.ndarray,
                    max_tokens: Optional[int] = None, micro_batch_size: int = 8) -> Dict[str, float]:
    if tokens.size and int(tokens.max()) >= model.vocab_size:
        raise EvaluationError(
            f"token id {int(tokens.max())} is outside the checkpoint's vocabulary "
            f"({model.vocab_size}): the data was tokenized with another tokenizer")
    inputs, labels, label_mask = windows(tokens, mask, model.seq_length, max_tokens)
    sums = sequence_nll(model, inputs, labels, label_mask, micro_batch_size).sum(0)
    nll, count = float(sums[0]), int(sums[1])
    if count == 0:
        raise EvaluationError("no scored tokens (every target is masked)")
    return {"perplexity": math.exp(nll / count), "loss": nll / count, "tokens": count,
            "windows": int(inputs.shape[0])}
