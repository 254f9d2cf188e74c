"""Writing a token dataset and its ``_loss_mask`` sibling with megatron-core's IndexedDatasetBuilder.

Files (docs/architecture.md, "Formats")::

    {prefix}.bin / .idx             token ids (megatron-core IndexedDataset, dtype from vocab size)
    {prefix}_loss_mask.bin / .idx   uint8, identical sequence lengths and document boundaries

Every file is first written under a temporary name unique to the run; :meth:`PairedIndexedWriter.commit`
removes the old token ``.idx``, then renames in the order mask .bin, mask .idx, token .bin, token
.idx, so the token ``.idx`` (what readers look for) appears last, only when everything else is
complete: no reader ever sees a mask paired with other tokens. :meth:`abort` (also on an
exception inside ``with``) removes the temporary files and leaves earlier outputs untouched.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

from megatron_prealign.data.atomic import remove_abandoned, run_tag

LOSS_MASK_SUFFIX = "_loss_mask"


def loss_mask_prefix(prefix: str) -> str:
    """Path prefix of the loss-mask sibling of the token dataset at ``prefix``."""
    return prefix + LOSS_MASK_SUFFIX


def token_dtype(vocab_size: int) -> type:
    """megatron-core's choice (uint16 below 65500 ids, else int32), as Megatron-LM uses it."""
    return DType.optimal_dtype(vocab_size)


class PairedIndexedWriter:
    """Appends documents to a token dataset and (optionally) its loss-mask sibling."""

    def __init__(self, prefix: str, vocab_size: int, with_loss_mask: bool = True,
                 dtype: Optional[type] = None) -> None:
        """``dtype`` overrides the token dtype chosen from ``vocab_size`` (merging datasets)."""
        self.prefix = prefix
        self.dtype = token_dtype(vocab_size) if dtype is None else dtype
        self.vocab_size = vocab_size
        # Unique to this run; what a killed run left (same host, process gone) is removed.
        tag = f".tmp-{run_tag()}-{os.urandom(4).hex()}"
        self._final = [(prefix, np.dtype(self.dtype))]
        if with_loss_mask:
            self._final.insert(0, (loss_mask_prefix(prefix), np.dtype(np.uint8)))
        for p, _ in self._final:
            for ext in (".bin", ".idx"):
                remove_abandoned(os.path.dirname(os.path.abspath(p)), os.path.basename(p) + ".tmp-", ext)
        self._tmp = {p: p + tag for p, _ in self._final}
        self._builders = {}
        try:
            for p, dtype in self._final:
                self._builders[p] = IndexedDatasetBuilder(self._tmp[p] + ".bin", dtype=dtype.type)
        except BaseException:
            self.abort()
            raise
        self._token_builder = self._builders[prefix]
        self._mask_builder = self._builders.get(loss_mask_prefix(prefix))
        self.documents = 0
        self.tokens = 0
        self._done = False

    def add_document(
        self,
        ids: Sequence[int],
        mask: Optional[np.ndarray] = None,
        lengths: Optional[Sequence[int]] = None,
    ) -> None:
        """One document of token ids; ``mask`` (uint8, same length) defaults to all ones.

        ``lengths`` splits the document into several sequences (default: one).
        """
        ids = np.asarray(ids, dtype=np.int64)
        lengths = [int(ids.size)] if lengths is None else [int(n) for n in lengths]
        if sum(lengths) != ids.size:
            raise ValueError("sequence lengths do not add up to the document length")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}) in document {self.documents}"
            )
        self._token_builder.add_document(ids.astype(self.dtype), lengths)
        if self._mask_builder is not None:
            if mask is None:
                mask = np.ones(ids.size, dtype=np.uint8)
            elif len(mask) != ids.size:
                raise ValueError("loss mask and token ids differ in length")
            self._mask_builder.add_document(np.asarray(mask, dtype=np.uint8), lengths)
        self.documents += 1
        self.tokens += int(ids.size)

    def add_documents(
        self, ids: np.ndarray, doc_lengths: np.ndarray, mask: Optional[np.ndarray] = None
    ) -> None:
        """Several documents (one sequence each) given back to back: ``ids`` concatenated,
        ``doc_lengths`` tokens per document, ``mask`` like ``ids`` (None = all ones).

        Writes exactly what :meth:`add_document` per document would, with one write per file.
        """
        ids = np.asarray(ids)
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        if int(lengths.sum()) != ids.size:
            raise ValueError("document lengths do not add up to the number of token ids")
        if mask is not None and len(mask) != ids.size:
            raise ValueError("loss mask and token ids differ in length")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            first = int(np.flatnonzero((ids < 0) | (ids >= self.vocab_size))[0])
            doc = int(np.searchsorted(np.cumsum(lengths), first, side="right"))
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}) in document {self.documents + doc}"
            )
        seq_lengths = lengths.tolist()
        parts = [(self._token_builder, ids.astype(self.dtype, copy=False))]
        if self._mask_builder is not None:
            parts.append((
                self._mask_builder,
                np.ones(ids.size, dtype=np.uint8) if mask is None
                else np.asarray(mask, dtype=np.uint8),
            ))
        for builder, array in parts:
            # IndexedDatasetBuilder.add_document for each document, batched: the same bytes
            # and the same index entries.
            builder.data_file.write(np.ascontiguousarray(array).data)  # no copy
            n = len(builder.sequence_lengths)
            builder.sequence_lengths.extend(seq_lengths)
            builder.document_indices.extend(range(n + 1, n + 1 + len(seq_lengths)))
        self.documents += len(seq_lengths)
        self.tokens += int(ids.size)

    def add_index(self, prefix: str) -> None:
        """Append a whole dataset (and its ``_loss_mask`` sibling when this writer has one) with
        megatron-core's ``IndexedDatasetBuilder.add_index``; the caller checks dtypes and masks."""
        self._token_builder.add_index(prefix)
        if self._mask_builder is not None:
            self._mask_builder.add_index(loss_mask_prefix(prefix))
        self.documents = len(self._token_builder.document_indices) - 1
        self.tokens += os.path.getsize(prefix + ".bin") // np.dtype(self.dtype).itemsize

    def commit(self) -> None:
        """Finish the index files and move everything to the final names."""
        for p, _ in self._final:
            self._builders[p].finalize(self._tmp[p] + ".idx")
        if self._mask_builder is None:  # a stale sibling would be misread as this data's mask
            for ext in (".idx", ".bin"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(loss_mask_prefix(self.prefix) + ext)
        # The old token .idx (what readers open) goes first, so that a kill between the renames
        # leaves no dataset rather than a new mask paired with old tokens; it reappears last.
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.prefix + ".idx")
        for p, _ in self._final:  # mask pair first; the token .idx is the last file to appear
            os.replace(self._tmp[p] + ".bin", p + ".bin")
            os.replace(self._tmp[p] + ".idx", p + ".idx")
        self._done = True

    def abort(self) -> None:
        """Drop the temporary files."""
        for builder in self._builders.values():
            with contextlib.suppress(Exception):
                builder.data_file.close()
        for tmp in self._tmp.values():
            for ext in (".bin", ".idx"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp + ext)
        self._done = True

    def __enter__(self) -> "PairedIndexedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()
