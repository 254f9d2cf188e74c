"""The preprocessing pipeline behind ``tools/preprocess_data.py``.

JSON lines -> (codeswitched) token ids + loss masks -> megatron-core indexed datasets.

* Streaming: the input is cut into blocks of whole lines (:class:`.jsonl_input.LineBlock`, the
  main process never handles single lines) handed to worker processes with at most
  ``2 * workers`` blocks in flight, results consumed in input order. (``Pool.imap`` would read the
  whole input ahead of the workers, so memory would not stay bounded.)
* Determinism: the document index is the 0-based index of the non-blank input line over all
  input files; bad lines keep their index. Codeswitching draws depend only on
  (seed, document index, key index, word position) (see :mod:`.codeswitch`), so any number of
  workers writes byte-identical files.
* Atomic outputs: see :mod:`.indexed_writer`.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.alignment_table import read_table, table_languages
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.codeswitch import (
    CODESWITCH_MODES,
    Codeswitcher,
    SwitchedBatch,
    SwitchStats,
)
from megatron_prealign.data.indexed_writer import PairedIndexedWriter, token_dtype
from megatron_prealign.data.workers import AllOrNothing, parallel_map
from megatron_prealign.data.jsonl_input import (
    LineBlock,
    expand_inputs,
    iter_line_blocks,
    parse_documents,
)
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_text_tokenizer

BLOCK_BYTES = 1 << 18  # input bytes per worker task (the first blocks are smaller)


@dataclass
class PreprocessSettings:
    """Everything a worker needs; plain data so it pickles to worker processes."""

    tokenizer: Dict[str, Any]
    json_keys: List[str]
    append_eod: bool = False
    alignment_table: Optional[str] = None
    languages: List[str] = field(default_factory=list)
    codeswitch_ratio: float = 0.05
    codeswitch_mode: str = "input-only"
    seed: int = 1234
    skip_bad_lines: bool = False
    chunk_cache: bool = True  # SentencePiece BPE through data.chunk_cache (same ids, faster)


def output_prefix(prefix: str, key: str) -> str:
    """Megatron-LM's naming: ``{prefix}_{key}_document``."""
    return f"{prefix}_{key}_document"


def resolve_languages(table_path: str, entries, requested: Optional[Sequence[str]]):
    """(languages to use, table languages ignored). Raises when a requested one is missing."""
    available = table_languages(entries)
    if not requested:
        return available, []
    missing = [lang for lang in requested if lang not in available]
    if missing:
        raise BadInputError(
            table_path,
            None,
            f"--codeswitch-languages {' '.join(missing)} not in the table "
            f"(it has: {', '.join(available) or 'no translations'})",
        )
    return list(requested), [lang for lang in available if lang not in requested]


# --------------------------------------------------------------------------- worker side

_WORKER: Dict[str, Any] = {}


def _init_worker(settings: PreprocessSettings, token: Optional[int] = None) -> None:
    """Builds the tokenizer and codeswitcher of this process.

    Forked workers inherit the state the main process built for the same run (``token``
    matches), so they skip rebuilding it (tokenizer loading, table tokenization).
    """
    if token is not None and _WORKER.get("token") == token:
        return
    encoder = TextEncoder(build_text_tokenizer(settings.tokenizer), chunk_cache=settings.chunk_cache)
    switcher = None
    if settings.alignment_table and settings.codeswitch_mode != "none":
        entries = read_table(settings.alignment_table)
        switcher = Codeswitcher(
            entries,
            settings.languages,
            settings.codeswitch_ratio,
            settings.codeswitch_mode,
            settings.seed,
            encoder,
        )
    if settings.append_eod and encoder.eod is None:
        raise ValueError("--append-eod: the tokenizer defines no end-of-document token")
    # Ids can only reach the switcher's bound (En-Clone forms lie beyond the tokenizer's ids).
    vocab_size = switcher.id_bound if switcher is not None else encoder.vocab_size
    _WORKER.clear()
    _WORKER.update(settings=settings, encoder=encoder, switcher=switcher, token=token,
                   vocab_size=vocab_size, dtype=token_dtype(vocab_size))


def _init_pool_worker(settings: PreprocessSettings, token: Optional[int] = None) -> None:
    """Initializer of the worker processes: :func:`_init_worker`, and one encoding thread per
    worker (the ``tokenizers`` batch encoder would otherwise use every core in every worker)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _init_worker(settings, token)


@dataclass
class BlockResult:
    """What a worker sends back for one block of lines: a few arrays, not one object a line."""

    per_key: List[SwitchedBatch]  # the block's good documents, per --json-keys key
    stats: SwitchStats
    bad: List[Tuple[str, int, str]]  # (path, line, message) of bad lines, in input order
    nbytes: int


def _process_block(block: LineBlock) -> BlockResult:
    settings: PreprocessSettings = _WORKER["settings"]
    encoder: TextEncoder = _WORKER["encoder"]
    switcher: Optional[Codeswitcher] = _WORKER["switcher"]
    eod = encoder.eod if settings.append_eod else None
    lines = block.lines()
    docs, bad = parse_documents([line for _, line in lines], settings.json_keys)
    doc_indices = [lines[i][0] for i, _ in docs]
    per_key = []
    stats = SwitchStats()
    for key_index, key in enumerate(settings.json_keys):
        texts = [texts[key] for _, texts in docs]
        # All documents of the block at once: one batch call into the tokenizer, vectorised
        # matching of table words.
        ids, lens = encoder.encode_batch(texts)
        if switcher is not None:
            batch = switcher.process_batch(texts, doc_indices, key_index, eod=eod, encoded=(ids, lens))
            stats.add(batch.total_stats())
        else:
            zeros = np.zeros(len(lens), dtype=np.int64)
            batch = SwitchedBatch.build(ids, lens, None, zeros, zeros, zeros, zeros, eod)
        if batch.ids.size and batch.ids.max() < _WORKER["vocab_size"]:
            # The writer's dtype (uint16 for most vocabularies): a quarter of the bytes to send to
            # the main process. Out-of-range ids stay int64 for the writer's error message.
            batch.ids = batch.ids.astype(_WORKER["dtype"])
        per_key.append(batch)
    return BlockResult(per_key, stats, bad, len(block.data))


# --------------------------------------------------------------------------- main side


def run_preprocess(
    inputs: Sequence[str],
    output_prefix_: str,
    settings: PreprocessSettings,
    workers: int = 1,
    progress: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> Dict[str, Any]:
    """Run the pipeline; returns the summary (also what the tool prints)."""
    if settings.codeswitch_mode not in CODESWITCH_MODES:
        raise ValueError(f"--codeswitch-mode must be one of {CODESWITCH_MODES}")
    files = expand_inputs(inputs)
    ignored_languages: List[str] = []
    if settings.alignment_table and settings.codeswitch_mode != "none":
        entries = read_table(settings.alignment_table)  # validate once, with file:line errors
        if not entries:
            raise BadInputError(settings.alignment_table, None, "the table has no entries: nothing "
                                "to codeswitch (rebuild it, or use --codeswitch-mode none)")
        settings.languages, ignored_languages = resolve_languages(
            settings.alignment_table, entries, settings.languages
        )
    # Validates tokenizer/table in this process (also used if workers == 1); forked workers
    # inherit this state through the token instead of building it again.
    token = int.from_bytes(os.urandom(8), "little")
    _init_worker(settings, token)
    encoder: TextEncoder = _WORKER["encoder"]
    switcher: Optional[Codeswitcher] = _WORKER["switcher"]
    if switcher is not None and any(e.token_ids for e in entries):
        # Token-id forms may name the tokenizer's ids and their En-Clone copies, nothing beyond.
        read_table(settings.alignment_table, max_token_id=2 * encoder.vocab_size)
    vocab_size = _WORKER["vocab_size"]
    skip = SkipCounter(settings.skip_bad_lines)
    stats = SwitchStats()
    total_bytes = sum(os.path.getsize(f) for f in files)
    start = time.perf_counter()

    from tqdm import tqdm  # not at tools/preprocess_data.py --help (start-up time)

    prefixes = [output_prefix(output_prefix_, key) for key in settings.json_keys]
    blocks = iter_line_blocks(files, block_bytes)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="preprocess", file=sys.stderr,
              disable=not progress) as bar, AllOrNothing() as outputs, \
            parallel_map(_process_block, blocks, workers, _init_pool_worker, (settings, token)) as results:
        writers = [outputs.add(PairedIndexedWriter(p, vocab_size, with_loss_mask=True)) for p in prefixes]
        for block_result in results:
            for path, line_no, message in block_result.bad:
                skip.raise_or_count(BadInputError(path, line_no, message))
            for writer, batch in zip(writers, block_result.per_key):
                writer.add_documents(batch.ids, batch.lengths, batch.mask)
            stats.add(block_result.stats)
            bar.update(block_result.nbytes)
        if writers and writers[0].documents == 0:
            raise BadInputError(", ".join(files), None, "no documents: the input holds no text "
                                f"under --json-keys {' '.join(settings.json_keys)}; nothing written")
    elapsed = time.perf_counter() - start
    # Peak resident memory (MiB; Linux reports KiB) of this process and of the largest of the
    # (joined) worker processes: bounded by the chunk size and the queue length, not the corpus.
    peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else peak_main
    return {
        "outputs": prefixes,
        "files": len(files),
        "documents": writers[0].documents if writers else 0,
        "tokens": sum(w.tokens for w in writers),
        "words": stats.words,
        "eligible_words": stats.eligible,
        "switched_words": stats.switched,
        "switch_rate": stats.switched / stats.eligible if stats.eligible else 0.0,
        "masked_tokens": stats.masked_tokens,
        "skipped_lines": skip.total,
        "skipped_detail": skip.summary(),
        "languages": list(settings.languages),
        "ignored_table_languages": ignored_languages,
        "elapsed_s": elapsed,
        "tokens_per_s": sum(w.tokens for w in writers) / elapsed if elapsed > 0 else 0.0,
        "input_bytes": total_bytes,
        "peak_rss_main_mib": peak_main,
        "peak_rss_worker_mib": peak_worker,
    }


def format_summary(summary: Dict[str, Any]) -> str:
    lines = [
        f"outputs:          {', '.join(summary['outputs'])} (+ _loss_mask siblings)",
        f"documents:        {summary['documents']}",
        f"tokens:           {summary['tokens']}",
        f"skipped lines:    {summary['skipped_detail']}",
    ]
    if summary["languages"]:
        lines += [
            f"languages:        {', '.join(summary['languages'])}"
            + (
                f" (table languages not requested, ignored: "
                f"{', '.join(summary['ignored_table_languages'])})"
                if summary["ignored_table_languages"]
                else ""
            ),
            f"eligible words:   {summary['eligible_words']} of {summary['words']} words",
            f"switched words:   {summary['switched_words']} "
            f"(rate {summary['switch_rate']:.4f} of eligible)",
            f"masked tokens:    {summary['masked_tokens']}",
        ]
    lines.append(
        f"time:             {summary['elapsed_s']:.2f} s, {summary['tokens_per_s']:.0f} tokens/s, "
        f"{summary['input_bytes'] / 1e6 / max(summary['elapsed_s'], 1e-9):.2f} MB/s"
    )
    lines.append(
        f"peak memory:      main {summary['peak_rss_main_mib']:.0f} MiB, "
        f"largest worker {summary['peak_rss_worker_mib']:.0f} MiB"
    )
    return "\n".join(lines)
