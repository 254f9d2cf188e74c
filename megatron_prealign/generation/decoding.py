"""Batched generation with megatron-core's static KV cache.

Each batch gets a :class:`megatron.core.inference.contexts.StaticInferenceContext`; GPTModel's
attention layers keep every position's keys and values in it. Prompts of one batch can differ
in length (as in megatron-core's static text generation controller): the shortest common prefix
is prefilled in one forward pass, then every step feeds one token per row at the next position:
the row's own prompt token while it is still inside its prompt, else the token just chosen for
it. So each row sees exactly its own prompt and continuation, and greedy decoding matches the
recompute-everything loop (``use_cache=False``) token for token.

Under pipeline parallelism every forward pass (prefill and each step) runs through megatron-core's
forward-only pipeline schedule (activations sent stage to stage) and the last stage's logits are
broadcast to every rank; under tensor parallelism the vocabulary shards are gathered. Every rank
then picks the same next token (same logits, same seeded generator).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from megatron.core.inference.contexts import StaticInferenceContext
from tqdm import tqdm

from megatron_prealign.generation.model_loading import EvaluationError, LoadedModel, last_token_logits
from megatron_prealign.generation.sampling import SamplingParams, next_tokens
from megatron_prealign.runtime import rank_zero

EOD, STOP, LENGTH = "eod", "stop", "length"


@dataclasses.dataclass
class Generation:
    tokens: List[int]  # new token ids, up to and including the EOD / the stop string's last token
    stop_reason: str  # "eod", "stop" (a stop string) or "length" (--max-new-tokens)


def check_lengths(prompts: Sequence[Sequence[int]], max_new_tokens: int, seq_length: int):
    """Refuse, before any compute, empty prompts and prompts that leave no room for
    ``max_new_tokens`` within the model's sequence length (its position table)."""
    if not prompts:
        raise EvaluationError("no prompts (empty input set)")
    if max_new_tokens < 1:
        raise EvaluationError(f"--max-new-tokens {max_new_tokens} must be >= 1")
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise EvaluationError(f"prompt {index + 1} tokenizes to nothing")
        if len(prompt) + max_new_tokens > seq_length:
            raise EvaluationError(
                f"prompt {index + 1} has {len(prompt)} tokens; with --max-new-tokens "
                f"{max_new_tokens} it exceeds the model's sequence length {seq_length}: shorten "
                "the prompt or lower --max-new-tokens")


def _generate_batch(model: LoadedModel, prompts: List[List[int]], max_new_tokens: int,
                    params: SamplingParams, generator: torch.Generator, eod: Optional[int],
                    stopped: Callable[[List[int]], bool], use_cache: bool,
                    allowed_vocab: Optional[int]) -> List[Generation]:
    n = len(prompts)
    lengths = [len(p) for p in prompts]
    shortest, longest = min(lengths), max(lengths)
    total = longest + max_new_tokens
    sequence = torch.zeros(n, total, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        sequence[i, :len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    new: List[List[int]] = [[] for _ in prompts]
    reasons: List[Optional[str]] = [None] * n

    context = StaticInferenceContext(n, total) if use_cache else None
    position = shortest  # tokens [0, position) of every row have been fed
    logits = last_token_logits(model, sequence[:, :position], inference_context=context)
    while True:
        if context is not None:
            context.increment_sequence_len_offset(position - context.sequence_len_offset)
        chosen = next_tokens(logits, params, generator, allowed_vocab)
        for i in range(n):
            if position < lengths[i] or reasons[i] is not None:
                continue  # still inside its prompt / finished
            token = int(chosen[i])
            sequence[i, position] = token
            new[i].append(token)
            if eod is not None and token == eod:
                reasons[i] = EOD
            elif stopped(new[i]):
                reasons[i] = STOP
            elif len(new[i]) >= max_new_tokens:
                reasons[i] = LENGTH
        if all(r is not None for r in reasons):
            break
        position += 1
        if context is not None:
            context.enable_decode_mode()
            logits = last_token_logits(model, sequence[:, position - 1:position],
                                       inference_context=context, start_position=position - 1)
        else:
            logits = last_token_logits(model, sequence[:, :position])
    return [Generation(tokens, reason) for tokens, reason in zip(new, reasons)]


def generate(model: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             params: SamplingParams = SamplingParams(), eod: Optional[int] = None,
             stop_strings: Sequence[str] = (), decode: Optional[Callable[[List[int]], str]] = None,
             batch_size: int = 8, use_cache: bool = True, allowed_vocab: Optional[int] = None,
             progress: bool = False) -> List[Generation]:
    """Continuations of ``prompts`` (token ids), in input order. Rows stop at ``eod``, at any of
    ``stop_strings`` (needs ``decode``: ids -> text) or after ``max_new_tokens``. Prompts are
    batched by length (fewer steps spent inside longer prompts); sampling is reproducible from
    ``params.seed`` for a given input and batch size."""
    try:
        params.validate()
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    prompts = [list(map(int, p)) for p in prompts]
    check_lengths(prompts, max_new_tokens, model.seq_length)
    if stop_strings and decode is None:
        raise ValueError("stop strings need a decode function")
    if batch_size < 1:
        raise EvaluationError(f"--batch-size {batch_size} must be >= 1")

    # Checked after every new token, a stop string ends in the last few characters: decode only
    # the last `window` tokens (a character is at most 4 byte-fallback tokens; the first one or
    # two may decode differently alone), not the whole continuation every step.
    longest = max(map(len, stop_strings), default=0)
    window = 4 * longest + 8

    def stopped(tokens: List[int]) -> bool:
        if not stop_strings:
            return False
        text = decode(tokens[-window:])
        if len(tokens) > window and len(text) < longest + 4:  # tokens of (almost) no text
            text = decode(tokens)
        return any(s in text for s in stop_strings)

    generator = torch.Generator().manual_seed(params.seed)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: List[Optional[Generation]] = [None] * len(prompts)

    with tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not (progress and rank_zero())) as bar:
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = _generate_batch(model, [prompts[i] for i in indices], max_new_tokens, params,
                                    generator, eod, stopped, use_cache, allowed_vocab)
            for i, generation in zip(indices, batch):
                results[i] = generation
            bar.update(len(indices))
    return results


def completion_text(generation: Generation, decode: Callable[[List[int]], str], eod: Optional[int],
                    stop_strings: Sequence[str] = ()) -> str:
    """The continuation's text: without the EOD, cut before the first stop string."""
    tokens = generation.tokens
    if eod is not None and tokens and tokens[-1] == eod:
        tokens = tokens[:-1]
    text = decode(tokens)
    cuts = [text.index(s) for s in stop_strings if s in text]
    return text[:min(cuts)] if cuts else text


def sampling_params(args) -> SamplingParams:
    """The sampling settings of the parsed decoding flags (``cli.options.add_generation_args``)."""
    params = SamplingParams(greedy=not args.sample, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    try:
        params.validate()
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    return params


def generate_texts(model: LoadedModel, to_ids, prompts: Sequence[str], args,
                   stop: Sequence[str] = ()) -> Tuple[List[str], List[Generation]]:
    """Continuations of text prompts with the parsed decoding flags (``to_ids`` turns a text into
    the model's ids and knows the tokenizer, e.g. :class:`evaluation.common.TextToIds`)."""
    ids = [to_ids(p) for p in prompts]
    stop = list(stop) + list(args.stop)
    decode = to_ids.encoder.decode
    generations = generate(model, ids, args.max_new_tokens, sampling_params(args), eod=to_ids.eod,
                           stop_strings=stop, decode=decode, batch_size=args.micro_batch_size,
                           use_cache=not args.no_kv_cache, allowed_vocab=to_ids.encoder.vocab_size,
                           progress=True)
    return [completion_text(g, decode, to_ids.eod, stop) for g in generations], generations
