"""Mixed-script ratio (the paper's Table 4 measure): generate a continuation of each prompt and
report the share of continuations containing at least one token of the other language.

"Other language" tokens are given either by an En-Clone mapping (prompts in one id range,
tokens of the other range count: ``prompt_language`` "en" or "enclone") or by a regular
expression matched against each generated token's text (e.g. ``[\u4e00-\u9fff]`` for Chinese
characters in English continuations). Decoding is greedy, or sampling with a temperature
(and top-k) from a seeded generator, identical on every rank.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import numpy as np

from megatron_prealign.evaluation.common import wilson_interval
from megatron_prealign.generation import SamplingParams, generate as generate_tokens
from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel


def generate(model: LoadedModel, prompts: List[np.ndarray], max_new_tokens: int, greedy: bool = True,
             temperature: float = 1.0, top_k: int = 0, seed: int = 1234, eod: Optional[int] = None,
             allowed_vocab: Optional[int] = None) -> List[List[int]]:
    """Continuations (new token ids) of each prompt; a row stops at ``eod`` (included)."""
    params = SamplingParams(greedy=greedy, temperature=temperature, top_k=top_k, seed=seed)
    return [g.tokens for g in generate_tokens(model, prompts, max_new_tokens, params, eod=eod,
                                              allowed_vocab=allowed_vocab)]


def other_language_predicate(mapping=None, prompt_language: str = "en", pattern: Optional[str] = None,
                             decode=None):
    if mapping is not None:
        low = mapping.offset
        shared = set(mapping.shared_ids)
        if prompt_language == "enclone":
            return lambda t: t < low and t not in shared
        return lambda t: t >= low
    if pattern is None:
        raise EvaluationError("give --enclone-mapping (En-Clone) or --other-token-pattern REGEX")
    regex = re.compile(pattern)
    cache: Dict[int, bool] = {}

    def is_other(token: int) -> bool:
        if token not in cache:
            cache[token] = bool(regex.search(decode([token])))
        return cache[token]

    return is_other


def mixed_script_ratio(continuations: List[List[int]], is_other) -> Dict:
    flags = [any(is_other(t) for t in c) for c in continuations]
    tokens = sum(len(c) for c in continuations)
    other_tokens = sum(sum(1 for t in c if is_other(t)) for c in continuations)

    return {"mixed_ratio": float(np.mean(flags)), "mixed": int(sum(flags)), "prompts": len(flags),
            "ci95": list(wilson_interval(int(sum(flags)), len(flags))),
            "other_token_share": other_tokens / max(tokens, 1), "generated_tokens": tokens}
