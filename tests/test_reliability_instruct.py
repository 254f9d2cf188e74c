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
