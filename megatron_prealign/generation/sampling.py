"""Choosing the next token from full-vocabulary logits: greedy, or sampling with a temperature,
top-k and top-p (nucleus) from a seeded generator. Every rank holds the same logits and the same
generator state, so every rank picks the same token without communicating."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    seed: int = 1234

    def validate(self):
        # Greedy decoding (no --sample) ignores the temperature; 0 means argmax anyway.
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"--temperature {self.temperature} must be > 0 with --sample (for argmax "
                             "decoding leave out --sample: greedy is the default)")
        if self.top_k < 0:
            raise ValueError(f"--top-k {self.top_k} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p {self.top_p} must be in (0, 1]")


def next_tokens(logits: torch.Tensor, params: SamplingParams, generator: Optional[torch.Generator],
                allowed_vocab: Optional[int] = None) -> torch.Tensor:
    """[n] token ids from [n, vocab] fp32 logits. ``allowed_vocab``: ids at or above it (the
    model's padded vocabulary rows) are never chosen."""
    if allowed_vocab is not None:
        logits = logits.clone()
        logits[:, allowed_vocab:] = -float("inf")
    if params.greedy:
        return logits.argmax(-1)
    scaled = logits / params.temperature
    if params.top_k:
        threshold = scaled.topk(min(params.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < threshold, -float("inf"))
    if params.top_p < 1.0:
        ordered, order = scaled.sort(dim=-1, descending=True)
        probabilities = torch.softmax(ordered, -1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop = probabilities.cumsum(-1) - probabilities >= params.top_p
        ordered = ordered.masked_fill(drop, -float("inf"))
        scaled = torch.full_like(scaled, -float("inf")).scatter(-1, order, ordered)
    return torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator).squeeze(-1)
