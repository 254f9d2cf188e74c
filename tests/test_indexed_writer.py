"""The numpy writer of the indexed format against megatron-core's own IndexedDatasetBuilder."""

import os

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.indexed_writer import (
    IndexedFileWriter,
    PairedIndexedWriter,
    read_index,
    token_dtype,
)


def _documents(seed, vocab):
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(40):
        n = int(rng.integers(0, 30))  # empty documents too
        ids = rng.integers(0, vocab, n)
        cuts = sorted(rng.integers(0, n + 1, int(rng.integers(0, 3))).tolist())
        lengths = np.diff([0, *cuts, n]).tolist()  # several sequences, some empty
        docs.append((ids, lengths))
    return docs


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("vocab", [300, 70000])
def test_bytes_equal_megatron_core_builder(tmp_path, vocab):
    dtype = token_dtype(vocab)
    assert dtype == DType.optimal_dtype(vocab)
    docs = _documents(vocab, vocab)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    writer = IndexedFileWriter(ours + ".bin", dtype)
    builder = IndexedDatasetBuilder(theirs + ".bin", dtype=dtype)
    for ids, lengths in docs:
        writer.add_document(ids, lengths)
        builder.add_document(torch.from_numpy(ids), lengths)
    # several one-sequence documents in one write (the preprocessing path)
    batch = [np.arange(5) % vocab, np.arange(0), np.arange(9) % vocab]
    writer.add_documents(np.concatenate(batch), [b.size for b in batch])
    for ids in batch:
        builder.add_document(torch.from_numpy(ids), [ids.size])
    writer.finalize(ours + ".idx")
    builder.finalize(theirs + ".idx")
    for ext in (".bin", ".idx"):
        assert _read(ours + ext) == _read(theirs + ext), ext

    dataset = IndexedDataset(ours)
    flat = [ids[sum(lengths[:i]):sum(lengths[:i + 1])] for ids, lengths in docs
            for i in range(len(lengths))] + batch
    assert len(dataset) == len(flat)
    for i, expected in enumerate(flat):
        np.testing.assert_array_equal(dataset[i], expected)
    assert dataset.document_indices.tolist() == read_index(ours + ".idx")[2].tolist()


def test_add_index_and_paired_writer_equal_megatron_core(tmp_path):
    docs = _documents(1, 1000)
    parts = []
    for k in range(2):
        prefix = str(tmp_path / f"part{k}")
        with PairedIndexedWriter(prefix, 1000) as writer:
            for ids, lengths in docs[k::2]:
                writer.add_document(ids, (ids % 2).astype(np.uint8), lengths)
            writer.commit()
        parts.append(prefix)
    merged = str(tmp_path / "merged")
    with PairedIndexedWriter(merged, 1000) as writer:
        for prefix in parts:
            writer.add_index(prefix)
        writer.commit()
    assert writer.documents == len(docs)
    for suffix, dtype in (("", np.uint16), ("_loss_mask", np.uint8)):
        theirs = str(tmp_path / f"theirs{suffix}")
        builder = IndexedDatasetBuilder(theirs + ".bin", dtype=dtype)
        for prefix in parts:
            builder.add_index(prefix + suffix)
        builder.finalize(theirs + ".idx")
        for ext in (".bin", ".idx"):
            assert _read(merged + suffix + ext) == _read(theirs + ext)
    dataset = IndexedDataset(merged)
    assert dataset.document_indices[-1] == sum(len(lengths) for _, lengths in docs)


def test_read_index_rejects_other_files(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"not an index at all, just some bytes here")
    with pytest.raises(ValueError, match="bad header"):
        read_index(str(path))
    assert not os.path.exists(tmp_path / "bad.bin")
