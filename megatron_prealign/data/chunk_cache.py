"""SentencePiece BPE encoding of running text through a cache of whitespace-separated chunks.

A SentencePiece BPE model trained with its defaults encodes a text as the concatenation of the
encodings of its space-separated chunks: ``encode("a b c") == encode("a") + encode("b") +
encode("c")``; the same holds at every whitespace character the normaliser turns into a space
(tabs, newlines, no-break spaces with nmt_nfkc: :func:`unlike_space` names the others). Why:

* normalisation works on characters; with ``remove_extra_whitespaces`` runs of spaces collapse
  and leading / trailing ones go, so an empty chunk encodes to nothing, and with
  ``add_dummy_prefix`` a chunk on its own gets the "▁" it has after a space in the text;
* no vocabulary piece holds "▁" past its first character (``split_by_whitespace``, whitespace
  as prefix), so no merge crosses a chunk boundary;
* BPE merges pieces by comparing piece scores, never sums of scores, so the result of one chunk
  does not depend on what precedes it. (A unigram model's Viterbi compares sums, which rounding
  can tip differently after a prefix: unigram models are not cached.)

Running text repeats its words, so encoding each distinct chunk once and copying its ids is a
fraction of SentencePiece's own time (``bench/preprocess.py``). :func:`refusal` checks the
model's settings and vocabulary and compares both encodings on a probe text before the cache is
used; every batch is checked once more on one of its documents (:class:`ChunkCacheMismatch`).
"""

from __future__ import annotations

import itertools
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.errors import ConfigError

WHITESPACE_PIECE = "\u2581"
# Spaces of all kinds, tabs, newlines, unusual characters, digits, punctuation, scripts.
_PROBE = ("  The bank,  by the river-side 12 km.\n  Ufer, 银行 und naïve Straße!\t\u00a0x "
          "\u3000y ﬁne \u2028z 1,234.5 ½ Ⅻ e\u0301 ٣٤ à \x0bv\x1c\x85 \r\n ")
# What str.split() splits at: the characters of str.isspace (tests compare).
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
              "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# Distinct chunks kept before the cache starts over (a worker reached 501 MiB with a full cache).
DEFAULT_MAX_CHUNKS = 1 << 21


class ChunkCacheMismatch(ConfigError):
    """The cached encoding of a document differs from SentencePiece's own encoding (the fix: the
    flag the message names)."""


def refusal(processor) -> Optional[str]:
    """Why ``processor`` cannot be encoded chunk by chunk, or None when it can (module docstring)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # needs protobuf
        return "protobuf is not installed (the model's settings cannot be read)"
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(processor.serialized_model_proto())
    trainer, normalizer = model.trainer_spec, model.normalizer_spec
    if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        return "not a BPE model"
    if not (normalizer.add_dummy_prefix and normalizer.remove_extra_whitespaces
            and normalizer.escape_whitespaces):
        return "normalizer keeps extra whitespace or adds no dummy prefix"
    if not trainer.split_by_whitespace or trainer.treat_whitespace_as_suffix:
        return "pieces may cross whitespace"
    if any(WHITESPACE_PIECE in piece.piece[1:] for piece in model.pieces):
        return "a piece holds whitespace past its first character"
    if not _adds_up(processor, _PROBE, _PROBE.split(" ")):
        return "chunk encodings do not add up to the text's on the probe text"
    return None


def _adds_up(processor, text: str, chunks: List[str]) -> bool:
    return processor.encode(text) == list(itertools.chain.from_iterable(processor.encode(chunks)))


def unlike_space(processor) -> List[str]:
    """The whitespace characters (``str.isspace``) the model's normaliser does not treat as a
    space (nmt_nfkc: vertical tab, \\x1c-\\x1f, \\x85; tabs, newlines, no-break spaces become
    spaces). A text without them can be cut at every whitespace character (``str.split()``)."""
    space = processor.normalize("a b")
    return [c for c in WHITESPACE if processor.normalize(f"a{c}b") != space]


class ChunkCache:
    """:meth:`encode_batch` = ``processor.encode(texts)`` for a processor :func:`refusal`
    accepts, through a cache of the texts' whitespace-separated chunks: a text is cut at every
    whitespace character where the normaliser makes them all spaces (:func:`unlike_space`), else
    at spaces only."""

    def __init__(self, processor, max_chunks: int = DEFAULT_MAX_CHUNKS) -> None:
        reason = refusal(processor)
        if reason is not None:
            raise ValueError(f"SentencePiece model cannot be encoded chunk by chunk: {reason}")
        self.processor = processor
        self.max_chunks = max_chunks
        self.batches = 0
        odd = unlike_space(processor)
        probe = "".join(c for c in _PROBE if c not in odd)
        if not _adds_up(processor, probe, probe.split()):
            odd = [c for c in WHITESPACE if c != " "]  # cut at spaces only
        self._has_odd_whitespace = re.compile("[" + re.escape("".join(odd)) + "]").search if odd else None
        self._reset()

    def split(self, text: str) -> List[str]:
        """The text's chunks, at least one (an empty or all-space text: one empty chunk)."""
        if self._has_odd_whitespace is not None and self._has_odd_whitespace(text):
            return text.split(" ")
        return text.split() or [""]

    def _reset(self) -> None:
        self._index = {}  # chunk -> its row in _starts / _lengths
        self._ids = np.zeros(1 << 16, dtype=np.int32)  # every cached chunk's ids back to back
        self._used = 0
        self._starts = np.zeros(1 << 14, dtype=np.int64)
        self._lengths = np.zeros(1 << 14, dtype=np.int64)

    def _add(self, chunks: List[str]) -> None:
        """Encode ``chunks`` (new, distinct) with SentencePiece and append them to the cache."""
        # Lists, not an array per chunk: half the time for many short chunks.
        encoded = self.processor.encode(chunks, num_threads=1)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        first, last = len(self._index), len(self._index) + len(chunks)
        if last > len(self._starts):
            size = max(last, 2 * len(self._starts))
            self._starts = np.resize(self._starts, size)
            self._lengths = np.resize(self._lengths, size)
        total = int(lengths.sum())
        if self._used + total > len(self._ids):
            self._ids = np.resize(self._ids, max(self._used + total, 2 * len(self._ids)))
        if total:
            self._ids[self._used:self._used + total] = np.fromiter(
                itertools.chain.from_iterable(encoded), dtype=np.int32, count=total)
        self._lengths[first:last] = lengths
        self._starts[first:last] = self._used + np.cumsum(lengths) - lengths
        self._used += total
        self._index.update(zip(chunks, range(first, last)))

    def encode_batch(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Token ids of ``texts`` back to back (int64) and each text's number of ids."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        per_text = [self.split(text) for text in texts]
        chunks = list(itertools.chain.from_iterable(per_text))
        rows = np.fromiter(map(self._index.get, chunks, itertools.repeat(-1)), dtype=np.int64,
                           count=len(chunks))
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            new = list(dict.fromkeys(chunks[i] for i in missing))
            if len(self._index) + len(new) > self.max_chunks:  # full: start over with this batch
                self._reset()
                new, missing = list(dict.fromkeys(chunks)), np.arange(len(chunks))
            self._add(new)
            rows[missing] = np.fromiter(map(self._index.__getitem__, (chunks[i] for i in missing)),
                                        dtype=np.int64, count=missing.size)
        lengths, starts = self._lengths[rows], self._starts[rows]
        ends = np.cumsum(lengths)
        # Position j of the output copies cached id starts[k] + (j - first output of chunk k).
        gather = np.arange(int(ends[-1]) if ends.size else 0) + np.repeat(starts - (ends - lengths), lengths)
        ids = self._ids[gather].astype(np.int64)
        counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        text_lengths = np.add.reduceat(lengths, np.cumsum(counts) - counts)
        self._check(texts, ids, text_lengths)
        return ids, text_lengths

    def _check(self, texts: Sequence[str], ids: np.ndarray, text_lengths: np.ndarray) -> None:
        """Compare one document per batch (a different one each batch) with SentencePiece."""
        k = self.batches % len(texts)
        self.batches += 1
        start = int(text_lengths[:k].sum())
        expected = self.processor.encode(texts[k], out_type="numpy")
        if not np.array_equal(ids[start:start + text_lengths[k]], expected):
            raise ChunkCacheMismatch(
                f"the chunk-cached encoding of a document differs from SentencePiece's "
                f"({texts[k][:80]!r}...); rerun preprocessing with --no-chunk-cache")
