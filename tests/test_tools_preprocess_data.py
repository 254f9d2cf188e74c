"""tools/preprocess_data.py end to end: outputs, determinism across workers, bad input, atomicity."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer
from tests.raw_lines import write_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import preprocess_data


TOKENIZERS = {
    "sp": ("SentencePieceTokenizer", "sp"),
    "hf": ("HuggingFaceTokenizer", "hf"),
}


def run(assets, tmp_path, name="out", tok="sp", extra=(), inputs=None):
    tok_type, key = TOKENIZERS[tok]
    prefix = str(tmp_path / name)
    argv = [
        "--input", *(inputs or [assets["en"]]), "--json-keys", "text",
        "--output-prefix", prefix, "--tokenizer-type", tok_type,
        "--tokenizer-model", assets[key], "--no-progress", *extra,
    ]
    return preprocess_data.main(argv), prefix + "_text_document"


def read(prefix):
    tokens, masks = IndexedDataset(prefix), IndexedDataset(prefix + "_loss_mask")
    # Copies: the arrays are views of an mmap that closes with the IndexedDataset.
    return [np.array(tokens[i]) for i in range(len(tokens))], [np.array(masks[i]) for i in range(len(masks))]


def docs(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


@pytest.mark.parametrize("tok", ["sp", "hf"])
def test_plain_tokenization_readable_by_megatron_core(assets, tmp_path, tok):
    rc, prefix = run(assets, tmp_path, tok=tok, extra=["--append-eod"])
    assert rc == 0
    encoder = TextEncoder(build_tokenizer(TOKENIZERS[tok][0], assets[TOKENIZERS[tok][1]]))
    tokens, masks = read(prefix)
    texts = docs(assets["en"])
    assert len(tokens) == len(texts)
    ds = IndexedDataset(prefix)
    assert ds.index.dtype == np.uint16 and len(ds.document_indices) == len(texts) + 1
    for text, ids, mask in zip(texts, tokens, masks):
        assert ids.tolist() == list(encoder.tokenizer.tokenize(text)) + [encoder.eod]
        assert mask.dtype == np.uint8 and mask.all()
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(prefix) + s for s in (".bin", ".idx", "_loss_mask.bin", "_loss_mask.idx")
    )


@pytest.mark.parametrize("tok", ["sp", "hf"])
def test_codeswitched_outputs_identical_for_one_and_two_workers(assets, tmp_path, tok):
    """... and with or without the SentencePiece chunk cache (data/chunk_cache.py)."""
    extra = ["--alignment-table", assets["table"], "--codeswitch-ratio", "0.2", "--append-eod"]
    outputs = []
    for name, flags in (("w1", ["--workers", "1"]), ("w2", ["--workers", "2"]),
                        ("nocache", ["--workers", "2", "--no-chunk-cache"])):
        rc, prefix = run(assets, tmp_path, name, tok, extra + flags)
        assert rc == 0
        outputs.append(prefix)
    for suffix in (".bin", ".idx", "_loss_mask.bin", "_loss_mask.idx"):
        for other in outputs[1:]:
            with open(outputs[0] + suffix, "rb") as a, open(other + suffix, "rb") as b:
                assert a.read() == b.read(), (other, suffix)
    tokens, masks = read(outputs[0])
    encoder = TextEncoder(build_tokenizer(TOKENIZERS[tok][0], assets[TOKENIZERS[tok][1]]))
    masked = sum(int((m == 0).sum()) for m in masks)
    assert masked > 100
    # Switched documents differ from plain tokenization exactly where something was masked.
    for text, ids, mask in zip(docs(assets["en"]), tokens, masks):
        plain = list(encoder.tokenizer.tokenize(text)) + [encoder.eod]
        assert (ids.tolist() == plain) == bool(mask.all())
        assert mask[-1] == 1  # EOD stays a target


def test_modes_and_summary(assets, tmp_path, capsys):
    base = ["--alignment-table", assets["table"], "--codeswitch-ratio", "0.3", "--seed", "9"]
    _, p_in = run(assets, tmp_path, "in", extra=base)
    out_in = capsys.readouterr().out
    _, p_orig = run(assets, tmp_path, "orig", extra=base + ["--codeswitch-mode", "original"])
    _, p_none = run(assets, tmp_path, "none", extra=base + ["--codeswitch-mode", "none"])
    t_in, m_in = read(p_in)
    t_orig, m_orig = read(p_orig)
    t_none, m_none = read(p_none)
    assert all(np.array_equal(a, b) for a, b in zip(t_in, t_orig))
    assert all(m.all() for m in m_orig) and all(m.all() for m in m_none)
    assert not all(np.array_equal(a, b) for a, b in zip(t_in, t_none))
    summary = dict(
        line.split(":", 1) for line in out_in.splitlines() if ":" in line
    )
    eligible = int(summary["eligible words"].split()[0])
    switched = int(summary["switched words"].split()[0])
    assert abs(switched / eligible - 0.3) < 4 * (0.3 * 0.7 / eligible) ** 0.5
    assert int(summary["masked tokens"]) == sum(int((m == 0).sum()) for m in m_in)
    assert "tokens/s" in summary["time"] and summary["skipped lines"].strip() == "0"


BAD_LINES = [
    ('{"text": "fine document"', "malformed JSON"),
    ('{"body": "no text key"}', "missing key: 'text'"),
    ('{"text": "   "}', "empty text"),
    (b'{"text": "bad \xff utf8"}', "invalid UTF-8"),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_bad_line_is_an_error_naming_file_and_line(assets, tmp_path, capsys, bad, message):
    path = write_lines(tmp_path / "in.jsonl", ['{"text": "the bank"}', bad, '{"text": "ok"}'])
    (tmp_path / "out").mkdir()
    rc, prefix = run(assets, tmp_path / "out", inputs=[path], extra=["--workers", "2"])
    err = capsys.readouterr().err
    assert rc != 0
    assert f"{path}:2: {message}" in err
    assert os.listdir(tmp_path / "out") == []  # nothing final, no temporary files left


def test_skip_bad_lines_counts_them(assets, tmp_path, capsys):
    lines = ['{"text": "the bank"}'] + [b for b, _ in BAD_LINES] + ['{"text": "the river"}']
    path = write_lines(tmp_path / "in.jsonl", lines)
    rc, prefix = run(assets, tmp_path, inputs=[path], extra=["--skip-bad-lines"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped lines:    4 (" in out and f"first: {path}:2: malformed JSON" in out
    tokens, _ = read(prefix)
    assert len(tokens) == 2


def test_existing_outputs_survive_a_failed_run(assets, tmp_path, capsys):
    rc, prefix = run(assets, tmp_path)
    before = {p: open(p, "rb").read() for p in glob.glob(prefix + "*")}
    bad = write_lines(tmp_path / "bad.jsonl", ['{"text": "a"}', "not json"])
    rc, _ = run(assets, tmp_path, inputs=[assets["en"], bad])
    assert rc != 0
    after = {p: open(p, "rb").read() for p in glob.glob(prefix + "*")}
    assert before == after
    assert not glob.glob(str(tmp_path / "*.tmp-*"))


def test_requested_language_missing_from_table(assets, tmp_path, capsys):
    rc, _ = run(assets, tmp_path, extra=["--alignment-table", assets["table"],
                                         "--codeswitch-languages", "fr"])
    err = capsys.readouterr().err
    assert rc != 0 and assets["table"] in err and "fr" in err and "de, zh" in err


def test_bad_table_line_names_file_and_line(assets, tmp_path, capsys):
    table = write_lines(tmp_path / "t.jsonl", ['{"word": "bank", "translations": {"de": ["Ufer"]}}',
                                               '{"word": "river", "translations": {"de": "Fluss"}}'])
    rc, _ = run(assets, tmp_path, extra=["--alignment-table", table])
    assert rc != 0 and f"{table}:2: bad translations" in capsys.readouterr().err


def test_globs_and_multiple_files_keep_document_order(assets, tmp_path):
    rc, prefix = run(assets, tmp_path, inputs=[os.path.join(os.path.dirname(assets["en"]), "[dz][eh].jsonl")])
    assert rc == 0
    tokens, _ = read(prefix)
    assert len(tokens) == len(docs(assets["de"])) + len(docs(assets["zh"]))


def test_script_help_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and "--codeswitch-mode" in result.stdout

