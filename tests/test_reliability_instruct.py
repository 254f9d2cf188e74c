"""Reliability of instruction data and fine-tuning on it (issue #31): misaligned Moses files,
records whose targets do not fit --seq-length, --sft data without its loss mask."""

import os

import numpy as np
import pytest

from megatron_prealign.data.indexed_writer import PairedIndexedWriter
from megatron_prealign.errors import ConfigError
from megatron_prealign.instruct.dataset import InstructionRecords
from tests.instruct_case import build_instruction_data


def _tokenizer(assets):
    return ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"]]


def test_moses_files_of_different_lengths_are_refused(tmp_path, assets, capsys):
    moses = tmp_path / "m.en-de"
    (tmp_path / "m.en-de.en").write_text("one\ntwo\nthree\nfour\nfive\n", encoding="utf-8")
    (tmp_path / "m.en-de.de").write_text("eins\ndrei\nvier\nfuenf\n", encoding="utf-8")
    code = build_instruction_data.main([
        "--format", "translation", "--input", str(moses), "--src-lang", "en", "--tgt-lang", "de",
        "--output-prefix", str(tmp_path / "out"), "--no-progress", *_tokenizer(assets)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{moses}.en:5: the aligned files" in err and "different numbers of lines" in err
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out")], "nothing written"


def _write(prefix, records, with_loss_mask=True):
    with PairedIndexedWriter(prefix, 64, with_loss_mask=with_loss_mask) as writer:
        for prompt, response in records:
            ids = np.arange(prompt + response) % 63 + 1
            writer.add_document(ids, np.r_[np.zeros(prompt), np.ones(response)].astype(np.uint8))
        writer.commit()
    return prefix


def test_records_whose_targets_fall_beyond_seq_length_are_refused(tmp_path):
    # Built at a long --seq-length, trained at 16: the second record's response starts at 20.
    prefix = _write(str(tmp_path / "long"), [(4, 30), (20, 5), (3, 3)])
    with pytest.raises(ConfigError, match=r"1 of 3 records have no target token within "
                       r"--seq-length 16 .*up to 20 tokens.*--seq-length 16, or train with --seq-length >= 20"):
        InstructionRecords(prefix, 16)
    records = InstructionRecords(prefix, 20)  # the first target is the label of the last position
    assert len(records) == 3 and records.record(1)[1][1:].any()


def test_sft_refuses_data_without_its_loss_mask(tmp_path):
    prefix = _write(str(tmp_path / "bare"), [(4, 3), (2, 5)], with_loss_mask=False)
    with pytest.raises(ConfigError, match=r"bare: no loss mask \(.*bare_loss_mask.bin/.idx\); --sft"):
        InstructionRecords(prefix, 16)


def test_full_disk_while_building_is_one_line(tmp_path, assets, monkeypatch, capsys):
    import errno

    path = tmp_path / "a.jsonl"
    path.write_text('{"instruction": "Copy.", "output": "the dog"}\n', encoding="utf-8")

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", self._tmp[self.prefix] + ".bin")

    monkeypatch.setattr(PairedIndexedWriter, "add_document", full_disk)
    code = build_instruction_data.main(["--format", "alpaca", "--input", str(path), "--output-prefix",
                                        str(tmp_path / "out"), "--no-progress", *_tokenizer(assets)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "error: no space left on device while writing" in err and f"(directory {tmp_path})" in err
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl"], "temporary files left"


def test_killed_builds_leave_nothing_a_reader_or_a_later_run_keeps(tmp_path, monkeypatch):
    import subprocess
    import sys

    from megatron_prealign.data.atomic import run_tag

    prefix = _write(str(tmp_path / "d"), [(2, 3)] * 4)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host = run_tag().rpartition("-")[0]
    killed = [tmp_path / f"d{mask}.tmp-{host}-{process.pid}-0a1b2c3d{ext}"
              for mask in ("", "_loss_mask") for ext in (".bin", ".idx")]
    live = tmp_path / f"d.tmp-{run_tag()}-feedbeef.bin"  # a run still writing
    for path in [*killed, live]:
        path.write_bytes(b"partial")
    # A kill between the renames of the commit: the new mask must not meet the old tokens.
    real_replace, calls = os.replace, []

    def killed_after_the_mask(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_the_mask)
    with pytest.raises(KeyboardInterrupt):
        _write(prefix, [(1, 9)] * 3)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[:2] == [prefix + "_loss_mask.bin", prefix + "_loss_mask.idx"]
    assert not os.path.exists(prefix + ".idx"), "old tokens readable next to the new mask"
    assert not any(path.exists() for path in killed) and live.exists()
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f and f != live.name]
    records = InstructionRecords(_write(prefix, [(1, 9)] * 3), 16)  # a rerun commits a matching pair
    assert len(records) == 3


def test_all_records_too_long_says_so(tmp_path, assets, capsys):
    path = tmp_path / "long.jsonl"
    path.write_text('{"instruction": "' + "word " * 100 + '", "output": "ok"}\n', encoding="utf-8")
    code = build_instruction_data.main(["--format", "alpaca", "--input", str(path), "--seq-length", "16",
                                        "--output-prefix", str(tmp_path / "out"), "--no-progress", *_tokenizer(assets)])
    err = capsys.readouterr().err
    assert code == 2 and "all skipped: 1 too long for --seq-length 16" in err and "raise --seq-length" in err, err
