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
