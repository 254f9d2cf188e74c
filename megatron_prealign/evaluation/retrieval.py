"""Sentence-level cross-lingual retrieval on parallel text (the paper's representation
evaluation): each sentence is the mean of its token states at a layer; an English sentence
retrieves the German sentence with the highest cosine among all German sentences of the set
(and the other way round). Reported per layer state: top-1 accuracy in both directions, the
mean cosine of true pairs and of all other pairs (the gap is what matters: raw cosines of a
small model are high for any pair). Chance is 1 / number of pairs.

Single process (TP = PP = 1): the states are read with forward hooks on the unwrapped
megatron-core ``GPTModel`` (embedding output, every transformer layer, the final norm).
"""

from __future__ import annotations

import json
import random
from typing import Dict, List, Sequence, Tuple

import torch

from megatron_prealign.evaluation.model_loading import EvaluationError, LoadedModel


def read_parallel(path: str, limit: int, seed: int = 1234) -> List[Tuple[str, str]]:
    """``limit`` (English, German) pairs of a JSON-lines file ``{"en", "de"}``, a seeded sample."""
    with open(path, encoding="utf-8") as handle:
        pairs = [(r["en"], r["de"]) for r in map(json.loads, handle) if r.get("en") and r.get("de")]
    if len(pairs) < 2:
        raise EvaluationError(f"{path}: fewer than two parallel pairs")
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def _unwrap(module):
    while hasattr(module, "module"):
        module = module.module
    return module


def sentence_states(model: LoadedModel, id_lists: Sequence[Sequence[int]], pad_id: int,
                    batch_size: int = 16) -> torch.Tensor:
    """[states, n, hidden]: mean token state per sentence (input embedding, layers, final norm)."""
    if len(model.chunks) != 1 or torch.distributed.get_world_size() != 1:
        raise EvaluationError("retrieval runs in a single process (TP = PP = DP = 1)")
    gpt = _unwrap(model.chunks[0])
    captured: List[torch.Tensor] = []
    hooks = [gpt.embedding.register_forward_hook(lambda m, a, out: captured.append(out))]
    for layer in gpt.decoder.layers:
        hooks.append(layer.register_forward_hook(
            lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out)))
    hooks.append(gpt.decoder.final_layernorm.register_forward_hook(
        lambda m, a, out: captured.append(out)))
    pooled = []
    try:
        for start in range(0, len(id_lists), batch_size):
            rows = [list(ids)[: model.seq_length] for ids in id_lists[start:start + batch_size]]
            width = max(len(r) for r in rows)
            tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), width)
            for i, row in enumerate(rows):
                tokens[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1.0
            positions = torch.arange(width).expand(len(rows), width).contiguous()
            captured.clear()
            with torch.no_grad():
                gpt(tokens, positions, None)
            # each capture is [s, b, h] (sequence first); causal attention: padding after a
            # sentence does not change its states
            states = torch.stack([c.float() for c in captured])  # [states, s, b, h]
            weights = mask.t().unsqueeze(0).unsqueeze(-1)  # [1, s, b, 1]
            pooled.append((states * weights).sum(1) / weights.sum(1))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(pooled, dim=1)


def retrieval_scores(english: torch.Tensor, german: torch.Tensor) -> Dict[str, List[float]]:
    """Per state: top-1 accuracy en->de and de->en, mean cosine of true pairs and of others."""
    en = torch.nn.functional.normalize(english.double(), dim=-1)
    de = torch.nn.functional.normalize(german.double(), dim=-1)
    sims = en @ de.transpose(1, 2)  # [states, n, n]
    n = sims.shape[1]
    target = torch.arange(n)
    eye = torch.eye(n, dtype=torch.bool)
    return {
        "en_to_de_top1": (sims.argmax(2) == target).double().mean(1).tolist(),
        "de_to_en_top1": (sims.argmax(1) == target).double().mean(1).tolist(),
        "pair_cosine": sims[:, eye].mean(1).tolist(),
        "other_cosine": sims[:, ~eye].mean(1).tolist(),
    }


def evaluate_retrieval(model: LoadedModel, tokenizer_model: str,
                       pairs: Sequence[Tuple[str, str]]) -> Dict:
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.evaluation.alignment_similarity import state_names

    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", tokenizer_model))
    pad = encoder.eod if encoder.eod is not None else 0
    english = sentence_states(model, [encoder.encode(en) for en, _ in pairs], pad)
    german = sentence_states(model, [encoder.encode(de) for _, de in pairs], pad)
    scores = retrieval_scores(english, german)
    return {"pairs": len(pairs), "chance": 1.0 / len(pairs),
            "states": state_names(model.model_args.num_layers)[:-1], **scores}
