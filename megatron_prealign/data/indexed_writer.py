"""Writing a token dataset and its ``_loss_mask`` sibling in megatron-core's indexed format.

Files (docs/architecture.md, "Formats")::

    {prefix}.bin / .idx             token ids (megatron-core IndexedDataset, dtype from vocab size)
    {prefix}_loss_mask.bin / .idx   uint8, identical sequence lengths and document boundaries

The format is written with numpy alone (:class:`IndexedFileWriter`), byte for byte what
megatron-core 0.19's ``IndexedDatasetBuilder`` writes (tests/test_indexed_writer.py compares the
bytes and reads them back with ``IndexedDataset``), so preprocessing never imports torch or
megatron-core. ``.bin``: the token ids back to back. ``.idx``, little-endian::

    b"MMIDIDX\\x00\\x00"  header (9 bytes)
    u64 1                  version
    u8  dtype code         megatron-core's DType: uint8 1, int8 2, int16 3, int32 4, int64 5,
                           float64 6, float32 7, uint16 8
    u64 sequence count S, u64 document count D + 1
    i32[S] sequence lengths, i64[S] byte offsets of the sequences in .bin,
    i64[D + 1] document indices (0, then the sequence index after each document)
    (i8[S] sequence modes follow only in multimodal datasets, which we do not write)

Every file is first written under a temporary name unique to the run; :meth:`PairedIndexedWriter.commit`
removes the old token ``.idx``, then renames in the order mask .bin, mask .idx, token .bin, token
.idx, so the token ``.idx`` (what readers look for) appears last, only when everything else is
complete: no reader ever sees a mask paired with other tokens. :meth:`abort` (also on an
exception inside ``with``) removes the temporary files and leaves earlier outputs untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.atomic import remove_abandoned, run_tag

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.dtype(t): code for code, t in enumerate(
    (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float64, np.float32, np.uint16), start=1)}
LOSS_MASK_SUFFIX = "_loss_mask"


def loss_mask_prefix(prefix: str) -> str:
    """Path prefix of the loss-mask sibling of the token dataset at ``prefix``."""
    return prefix + LOSS_MASK_SUFFIX


def token_dtype(vocab_size: Optional[int]) -> type:
    """megatron-core's choice (``DType.optimal_dtype``: uint16 below 65500 ids, else int32)."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def read_index(idx_path: str) -> Tuple[np.dtype, np.ndarray, np.ndarray]:
    """(dtype, sequence lengths, document indices) of a megatron-core ``.idx`` file."""
    with open(idx_path, "rb") as f:
        head = f.read(34)
        if len(head) < 34 or head[:9] != INDEX_HEADER:
            raise ValueError(f"{idx_path}: not a megatron-core index file (bad header)")
        version, code, sequences, documents = struct.unpack("<QBQQ", head[9:])
        if version != INDEX_VERSION:
            raise ValueError(f"{idx_path}: index version {version}, expected {INDEX_VERSION}")
        dtype = next((d for d, c in DTYPE_CODES.items() if c == code), None)
        if dtype is None:
            raise ValueError(f"{idx_path}: unknown dtype code {code}")
        lengths = np.fromfile(f, dtype="<i4", count=sequences)
        f.seek(8 * sequences, os.SEEK_CUR)  # the pointers follow from the lengths
        doc_indices = np.fromfile(f, dtype="<i8", count=documents)
    if lengths.size != sequences or doc_indices.size != documents:
        raise ValueError(f"{idx_path}: truncated index file")
    return dtype, lengths, doc_indices


class IndexedFileWriter:
    """One ``.bin`` / ``.idx`` pair; the interface and bytes of megatron-core's
    ``IndexedDatasetBuilder`` (non-multimodal) without torch."""

    def __init__(self, bin_path: str, dtype: type) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype {self.dtype} has no megatron-core DType code")
        self.data_file = open(bin_path, "wb")
        self.sequence_lengths: List[int] = []
        self.document_indices: List[int] = [0]

    def add_document(self, array: np.ndarray, lengths: Sequence[int]) -> None:
        self.data_file.write(np.ascontiguousarray(array, dtype=self.dtype).data)
        self.sequence_lengths.extend(lengths)
        self.document_indices.append(len(self.sequence_lengths))

    def add_documents(self, array: np.ndarray, lengths: Sequence[int]) -> None:
        """Several one-sequence documents back to back: one write."""
        self.data_file.write(np.ascontiguousarray(array, dtype=self.dtype).data)  # no copy
        n = len(self.sequence_lengths)
        self.sequence_lengths.extend(lengths)
        self.document_indices.extend(range(n + 1, n + 1 + len(lengths)))

    def add_index(self, prefix: str) -> None:
        """Append a whole dataset (``IndexedDatasetBuilder.add_index``)."""
        dtype, lengths, doc_indices = read_index(prefix + ".idx")
        if dtype != self.dtype:
            raise ValueError(f"{prefix}.idx holds {dtype.name}, this dataset {self.dtype.name}")
        offset = len(self.sequence_lengths)
        self.sequence_lengths.extend(lengths.tolist())
        self.document_indices.extend((doc_indices[1:] + offset).tolist())
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self.data_file)

    def finalize(self, idx_path: str) -> None:
        self.data_file.close()
        lengths = np.asarray(self.sequence_lengths, dtype="<i4")
        pointers = np.zeros(lengths.size, dtype="<i8")
        np.cumsum(lengths[:-1], dtype="<i8", out=pointers[1:])
        pointers *= self.dtype.itemsize
        with open(idx_path, "wb") as f:
            f.write(INDEX_HEADER)
            f.write(struct.pack("<QB", INDEX_VERSION, DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<QQ", lengths.size, len(self.document_indices)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(np.asarray(self.document_indices, dtype="<i8").tobytes())


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
                self._builders[p] = IndexedFileWriter(self._tmp[p] + ".bin", dtype)
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
            builder.add_documents(array, seq_lengths)
        self.documents += len(seq_lengths)
        self.tokens += int(ids.size)

    def add_index(self, prefix: str) -> None:
        """Append a whole dataset (and its ``_loss_mask`` sibling when this writer has one), as
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
