"""The pipeline behind ``tools/build_instruction_data.py``: instruction sources -> token ids with
an answer-only loss mask -> one megatron-core indexed dataset (+ ``_loss_mask`` sibling).

Every record becomes one document: the prompt part(s) and the response part(s) are tokenized
separately and concatenated (never the joined string, whose token boundary can move), followed by
the end-of-document token. Mask: 1 on the response tokens and the EOD (the model learns to stop),
0 on the prompt.

A record longer than ``seq_length`` tokens: when its first target token would not fit (the prompt
fills the sequence) it is skipped; otherwise ``long_records="truncate"`` cuts it to
``seq_length`` tokens (as the reference code does; counted, and its EOD is lost) and ``"skip"``
drops it (counted).

Determinism: records are written in source order, then item order; budgets (``limit``) keep the
first records that survive, decided in the main process on results consumed in input order, so
any number of workers writes the same bytes. Outputs are atomic
(:class:`~megatron_prealign.data.indexed_writer.PairedIndexedWriter`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.indexed_writer import PairedIndexedWriter
from megatron_prealign.data.workers import AllOrNothing, parallel_map
from megatron_prealign.data.preprocess import output_prefix
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer_from_spec
from megatron_prealign.instruct.sources import Source, iter_items, render_item
from megatron_prealign.instruct.templates import PromptTemplate

CHUNK_ITEMS = 256
LONG_RECORDS = ("truncate", "skip")


@dataclass
class BuildSettings:
    """Plain data for the worker processes."""

    tokenizer: Dict[str, Any]
    sources: List[Source]
    template: PromptTemplate
    seq_length: int
    long_records: str = "truncate"
    skip_bad_lines: bool = False
    add_bos: bool = False  # begin every record with the tokenizer's BOS (not a target)


@dataclass
class EncodedRecord:
    ids: np.ndarray
    mask: np.ndarray
    lang: Optional[str]
    truncated: bool


_WORKER: Dict[str, Any] = {}


def _init_worker(settings: BuildSettings, token: Optional[int] = None) -> None:
    if token is not None and _WORKER.get("token") == token:
        return  # a forked worker inherits the main process's state
    encoder = TextEncoder(build_tokenizer_from_spec(settings.tokenizer))
    if encoder.eod is None:
        raise ValueError("the tokenizer defines no end-of-document token; instruction data needs "
                         "one to end every response")
    if settings.add_bos and encoder.bos is None:
        raise ValueError("--add-bos: the tokenizer defines no beginning-of-sequence token")
    _WORKER.clear()
    _WORKER.update(settings=settings, encoder=encoder, token=token)


def encode_parts(encoder: TextEncoder, parts, eod: int,
                 bos: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Token ids and mask of (text, is_target) parts: ``bos`` (if given, not a target), each part
    tokenized on its own, then EOD (a target)."""
    ids, mask = [], []
    if bos is not None:
        ids.append(np.array([bos], dtype=np.int64))
        mask.append(np.zeros(1, dtype=np.uint8))
    for text, is_target in parts:
        part = encoder.encode_array(text) if text else np.zeros(0, dtype=np.int64)
        ids.append(part)
        mask.append(np.full(part.size, 1 if is_target else 0, dtype=np.uint8))
    ids.append(np.array([eod], dtype=np.int64))
    mask.append(np.ones(1, dtype=np.uint8))
    return np.concatenate(ids), np.concatenate(mask)


def _process_chunk(task: Tuple[int, list]) -> List[Tuple[str, Any]]:
    """Per item: ("ok", EncodedRecord) | ("bad", (path, line, message)) | ("long", None)."""
    source_index, items = task
    settings: BuildSettings = _WORKER["settings"]
    encoder: TextEncoder = _WORKER["encoder"]
    source = settings.sources[source_index]
    results = []
    for item in items:
        try:
            parts, lang = render_item(source, item, settings.template)
        except BadInputError as error:
            results.append(("bad", (error.path, error.line, error.message)))
            continue
        ids, mask = encode_parts(encoder, parts, encoder.eod,
                                 encoder.bos if settings.add_bos else None)
        truncated = False
        limit = settings.seq_length + 1  # a training row is seq_length inputs + the last label
        if ids.size > limit:
            first_target = int(np.argmax(mask))  # there is always one: the EOD
            if first_target >= limit or settings.long_records == "skip":
                results.append(("long", None))
                continue
            ids, mask, truncated = ids[:limit], mask[:limit], True
        results.append(("ok", EncodedRecord(ids, mask, lang, truncated)))
    return results


def _chunks(source_index: int, items: Iterator, size: int) -> Iterator[Tuple[int, list]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield source_index, chunk
            chunk = []
    if chunk:
        yield source_index, chunk


@dataclass
class SourceSummary:
    records: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    skipped_long: int = 0
    skipped_bad: int = 0
    languages: Counter = None

    def __post_init__(self):
        self.languages = Counter() if self.languages is None else self.languages


def run_build(settings: BuildSettings, output_prefix_: str, workers: int = 1, progress: bool = True,
              chunk_items: int = CHUNK_ITEMS) -> Dict[str, Any]:
    """Write ``{output_prefix}_text_document`` (+ ``_loss_mask``); return the summary."""
    if settings.long_records not in LONG_RECORDS:
        raise ValueError(f"long_records must be one of {LONG_RECORDS}")
    if settings.seq_length < 2:
        raise ValueError("--seq-length must be >= 2")
    token = int.from_bytes(os.urandom(8), "little")
    _init_worker(settings, token)
    encoder: TextEncoder = _WORKER["encoder"]
    skip = SkipCounter(settings.skip_bad_lines)
    summaries = {source.name: SourceSummary() for source in settings.sources}
    prefix = output_prefix(output_prefix_, "text")
    start = time.perf_counter()

    from tqdm import tqdm  # not at tools/build_instruction_data.py --help (start-up time)

    with tqdm(unit=" records", desc="instruction data", file=sys.stderr, disable=not progress) as bar, \
            AllOrNothing() as outputs:
        writer = outputs.add(PairedIndexedWriter(prefix, encoder.vocab_size, with_loss_mask=True))
        for source_index, source in enumerate(settings.sources):
            summary = summaries[source.name]
            chunks = _chunks(source_index, iter_items(source), chunk_items)
            # one pool per source: leaving the block drops the results still in flight once a
            # source's budget is met
            with parallel_map(_process_chunk, chunks, workers, _init_worker, (settings, token)) as results:
                for chunk_result in results:
                    for kind, value in chunk_result:
                        if source.limit is not None and summary.records >= source.limit:
                            break
                        if kind == "bad":
                            skip.raise_or_count(BadInputError(*value))
                            summary.skipped_bad += 1
                        elif kind == "long":
                            summary.skipped_long += 1
                        else:
                            writer.add_document(value.ids, value.mask)
                            summary.records += 1
                            summary.tokens += int(value.ids.size)
                            summary.target_tokens += int(value.mask.sum())
                            summary.truncated += int(value.truncated)
                            summary.languages[value.lang or "?"] += 1
                    bar.update(len(chunk_result))
                    if source.limit is not None and summary.records >= source.limit:
                        break
        if writer.documents == 0:
            long = sum(s.skipped_long for s in summaries.values())
            bad = sum(s.skipped_bad for s in summaries.values())
            why = []
            if long:
                why.append(f"{long} too long for --seq-length {settings.seq_length} (the prompt fills "
                           "it, or --long-records skip): raise --seq-length or use a shorter --template")
            if bad:
                why.append(f"{bad} bad (see the skipped lines)")
            raise BadInputError(", ".join(s.name for s in settings.sources), None,
                                f"no record left to write (all skipped: {'; '.join(why) or 'no records'}); "
                                "nothing written")
    elapsed = time.perf_counter() - start
    tokens = sum(s.tokens for s in summaries.values())
    targets = sum(s.target_tokens for s in summaries.values())
    return {
        "output": prefix,
        "records": writer.documents,
        "tokens": tokens,
        "target_tokens": targets,
        "masked_share": 1.0 - targets / tokens if tokens else 0.0,
        "sources": {name: {**vars(s), "languages": dict(s.languages)} for name, s in summaries.items()},
        "skipped_lines": skip.total,
        "skipped_detail": skip.summary(),
        "elapsed_s": elapsed,
    }


def format_summary(summary: Dict[str, Any]) -> str:
    lines = [
        f"output:           {summary['output']} (+ _loss_mask sibling)",
        f"records:          {summary['records']}",
        f"tokens:           {summary['tokens']} ({summary['target_tokens']} targets, "
        f"{summary['masked_share']:.1%} masked out)",
    ]
    for name, s in summary["sources"].items():
        langs = ", ".join(f"{lang}: {n}" for lang, n in sorted(s["languages"].items())) or "-"
        lines.append(
            f"  {name:<22} {s['records']} records ({langs}), {s['tokens']} tokens, "
            f"truncated {s['truncated']}, skipped: {s['skipped_long']} too long, {s['skipped_bad']} bad"
        )
    lines.append(f"skipped lines:    {summary['skipped_detail']}")
    lines.append(f"time:             {summary['elapsed_s']:.2f} s")
    return "\n".join(lines)


def parse_assignments(values: Optional[Sequence[str]], flag: str) -> List[Tuple[str, str]]:
    """``KEY=VALUE`` items of a flag, in order; raises ValueError naming the flag."""
    pairs = []
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise ValueError(f"{flag} expects KEY=VALUE items, got {value!r}")
        pairs.append((key, rest))
    return pairs
