"""Preprocessing on several machines: --partitions, tools/merge_datasets.py and the SLURM array
script (run here with bash and the SLURM_ARRAY_* variables a task would see)."""

import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.workers import partition_files, partition_prefix
from tests.test_tools_preprocess_data import read, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import merge_datasets

CODESWITCH = ["--alignment-table", None, "--codeswitch-ratio", "0.3", "--append-eod", "--seed", "7"]


@pytest.fixture(scope="module")
def shards(assets, tmp_path_factory):
    """The test corpus split into 5 input files of unequal size."""
    tmp = tmp_path_factory.mktemp("shards")
    with open(assets["en"], encoding="utf-8") as handle:
        lines = handle.readlines()
    cuts = [0, 40, 60, 130, 150, len(lines)]
    files = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        path = tmp / f"en-{i}.jsonl"
        path.write_text("".join(lines[a:b]), encoding="utf-8")
        files.append(str(path))
    return files


def _extra(assets):
    return [assets["table"] if a is None else a for a in CODESWITCH]


def test_partition_split_is_contiguous_balanced_and_complete():
    files = [f"f{i}" for i in range(7)]
    for sizes in ([1] * 7, [50, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 50], [3, 9, 2, 7, 1, 8, 4]):
        for n in range(1, 8):
            parts = [partition_files(files, n, k, sizes) for k in range(n)]
            assert sum(parts, []) == files and all(parts)  # in order, nothing lost, none empty
    assert partition_files(files, 2, 0, [1] * 7) == files[:3]  # middle byte rule: 3.5 | 3.5
    with pytest.raises(ValueError, match="--partitions 8"):
        partition_files(files, 8, 0, [1] * 7)
    with pytest.raises(ValueError, match="--partition-index 2"):
        partition_files(files, 2, 2, [1] * 7)


def test_partitions_write_the_bytes_of_their_share_and_merge_to_their_concatenation(
        assets, shards, tmp_path):
    n = 3
    parts = []
    for k in range(n):
        rc, _ = run(assets, tmp_path, "part", extra=[*_extra(assets), "--partitions", str(n),
                                                     "--partition-index", str(k)], inputs=shards)
        assert rc == 0
        prefix = partition_prefix(str(tmp_path / "part"), k, n) + "_text_document"
        # The same bytes as one machine preprocessing this share of files alone.
        share = partition_files(shards, n, k)
        rc, alone = run(assets, tmp_path, f"alone{k}", extra=_extra(assets), inputs=share)
        assert rc == 0
        for suffix in (".bin", ".idx", "_loss_mask.bin", "_loss_mask.idx"):
            assert filecmp.cmp(prefix + suffix, alone + suffix, shallow=False), suffix
        parts.append(prefix)
    assert len({tuple(partition_files(shards, n, k)) for k in range(n)}) == n

    merged = str(tmp_path / "merged_text_document")
    pattern = str(tmp_path / "part-part*-of-00003_text_document")
    assert merge_datasets.main(["--input", pattern, "--output-prefix", merged, "--no-progress"]) == 0
    tokens, masks = read(merged)
    expected_tokens, expected_masks = [], []
    for prefix in parts:
        t, m = read(prefix)
        expected_tokens += t
        expected_masks += m
    assert len(tokens) == len(expected_tokens) == sum(len(IndexedDataset(p)) for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(tokens, expected_tokens))
    assert all(np.array_equal(a, b) for a, b in zip(masks, expected_masks))
    assert any(not m.all() for m in masks)  # codeswitched: the masks carry information
    for suffix in (".bin", "_loss_mask.bin"):
        with open(merged + suffix, "rb") as handle:
            assert handle.read() == b"".join(open(p + suffix, "rb").read() for p in parts)
    ds = IndexedDataset(merged)
    assert ds.document_indices.tolist() == list(range(len(tokens) + 1))


def _write(prefix, docs, dtype, mask_docs=None):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for d in docs:
        builder.add_document(np.asarray(d, dtype=dtype), [len(d)])
    builder.finalize(prefix + ".idx")
    if mask_docs is not None:
        _write(prefix + "_loss_mask", mask_docs, np.uint8)


def test_merge_refuses_bad_inputs_before_writing(tmp_path, capsys):
    a, b, out = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "out")
    _write(a, [[1, 2, 3], [4]], np.uint16, [[1, 0, 1], [1]])

    def merge(*inputs, extra=()):
        rc = merge_datasets.main(["--input", *inputs, "--output-prefix", out, "--no-progress", *extra])
        return rc, capsys.readouterr().err

    _write(b, [[5, 6]], np.int32, [[1, 1]])
    rc, err = merge(a, b)
    assert rc == 2 and "dtype mismatch" in err and f"{b}.idx holds int32" in err

    _write(b, [[5, 6]], np.uint16)  # no mask sibling
    for ext in (".bin", ".idx"):
        os.remove(f"{b}_loss_mask{ext}")
    rc, err = merge(a, b)
    assert rc == 2 and f"{b}_loss_mask" in err and "missing loss-mask sibling" in err

    _write(b, [[5, 6]], np.uint16, [[1, 1, 1]])  # mask longer than its tokens
    rc, err = merge(a, b)
    assert rc == 2 and "loss mask does not match its tokens" in err and "sequence lengths" in err

    rc, err = merge(a, str(tmp_path / "nothing"))
    assert rc == 2 and "nothing.bin: not found" in err
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out")]  # nothing written

    _write(b, [[5, 6]], np.uint16, [[0, 1]])
    assert merge(a, b) == (0, "")
    assert [np.array(x).tolist() for x in IndexedDataset(out)] == [[1, 2, 3], [4], [5, 6]]
    assert [np.array(x).tolist() for x in IndexedDataset(out + "_loss_mask")] == [[1, 0, 1], [1], [0, 1]]
    for ext in (".bin", ".idx"):  # tokens only: masks neither read nor written
        os.remove(f"{b}_loss_mask{ext}")
    os.remove(out + "_loss_mask.bin")
    os.remove(out + "_loss_mask.idx")
    assert merge(a, b, extra=["--no-loss-mask"]) == (0, "")
    assert not os.path.exists(out + "_loss_mask.idx")


@pytest.mark.slow
def test_slurm_array_script_preprocesses_partitions_and_merges(assets, shards, tmp_path):
    script = os.path.join(ROOT, "examples", "preprocess_slurm.sbatch")
    env = {**os.environ, "PYTHON": sys.executable, "REPO": ROOT, "INPUT": " ".join(shards),
           "OUTPUT_PREFIX": str(tmp_path / "en"), "TOKENIZER_MODEL": assets["sp"],
           "ALIGNMENT_TABLE": assets["table"], "LANGUAGES": "de", "RATIO": "0.3", "SEED": "7",
           "WORKERS": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1",
           "PYTHONPATH": ROOT}
    result = subprocess.run(["bash", script], env={**env, "MERGE": "1", "PARTITIONS": "2"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "0 of 2 shares of text found" in result.stderr  # none yet
    for task in ("0", "1"):
        result = subprocess.run(["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": task},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(["bash", script], env={**env, "MERGE": "1", "PARTITIONS": "2"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # The merged dataset holds every input document, partition 0's first.
    rc, whole = run(assets, tmp_path, "whole", extra=[*_extra(assets)[:-2], "--seed", "7",
                                                      "--codeswitch-languages", "de"],
                    inputs=partition_files(shards, 2, 0))
    assert rc == 0
    merged_tokens, _ = read(str(tmp_path / "en_text_document"))
    first_tokens, _ = read(whole)
    n_docs = sum(len(open(f, encoding="utf-8").read().splitlines()) for f in shards)
    assert len(merged_tokens) == n_docs > len(first_tokens)
    assert all(np.array_equal(a, b) for a, b in zip(merged_tokens, first_tokens))


def test_partition_flags_are_checked_before_any_work(assets, shards, tmp_path, capsys):
    for extra, message in ((["--partitions", "6", "--partition-index", "0"], "--partitions 6"),
                           (["--partitions", "2"], "needs --partition-index"),
                           (["--partitions", "2", "--partition-index", "2"], "--partition-index 2")):
        with pytest.raises(SystemExit) as exit_info:
            run(assets, tmp_path, "bad", extra=extra, inputs=shards)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not os.listdir(tmp_path)
