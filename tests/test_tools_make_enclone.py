"""tools/make_enclone.py: shifted data, table with token-id forms, mapping; and its use."""

import os

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data.alignment_table import read_table
from megatron_prealign.data.enclone import ENCLONE, EncloneMapping
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import make_enclone
from megatron_prealign.cli import preprocess_data


def test_enclone_outputs(assets, tmp_path):
    tok = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"]]
    en = str(tmp_path / "en")
    assert preprocess_data.main(["--input", assets["en"], "--output-prefix", en, "--append-eod",
                                 "--alignment-table", assets["table"], "--codeswitch-ratio", "0.2",
                                 "--no-progress", *tok]) == 0
    en += "_text_document"
    clone, table, mapping_path = str(tmp_path / "clone"), str(tmp_path / "t.jsonl"), str(tmp_path / "m.json")
    assert make_enclone.main([*tok, "--input-prefix", en, "--output-prefix", clone,
                              "--alignment-table", assets["table"], "--output-table", table,
                              "--mapping-output", mapping_path, "--no-progress"]) == 0
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", assets["sp"]))
    V, eod = encoder.vocab_size, encoder.eod
    mapping = EncloneMapping.load(mapping_path)
    assert (mapping.offset, mapping.vocab_size, mapping.shared_ids) == (V, 2 * V, [eod])
    src, dst = IndexedDataset(en), IndexedDataset(clone)
    src_mask, dst_mask = IndexedDataset(en + "_loss_mask"), IndexedDataset(clone + "_loss_mask")
    assert np.array_equal(src.document_indices, dst.document_indices)
    for i in range(len(src)):
        a, b = np.array(src[i], dtype=np.int64), np.array(dst[i], dtype=np.int64)
        assert np.array_equal(np.where(a == eod, a, a + V), b)
        assert np.array_equal(src_mask[i], dst_mask[i])
    orig, cloned = mapping.pairs()
    assert eod not in orig and np.array_equal(cloned, orig + V) and len(orig) == V - 1
    entries = read_table(table)
    assert len(entries) == len(read_table(assets["table"]))
    for e in entries:
        assert e.translations == {ENCLONE: [e.word]}
        assert e.token_ids[ENCLONE] == [[t + V for t in encoder.form_ids(e.word)]]

    # Codeswitching into En-Clone: switched words become their clone ids, masked.
    cs = str(tmp_path / "cs")
    assert preprocess_data.main(["--input", assets["en"], "--output-prefix", cs, "--no-progress",
                                 "--alignment-table", table, "--codeswitch-ratio", "0.3", *tok]) == 0
    ids, mask = IndexedDataset(cs + "_text_document"), IndexedDataset(cs + "_text_document_loss_mask")
    assert ids.index.dtype == np.uint16
    for i in range(len(ids)):
        t, m = np.array(ids[i], dtype=np.int64), np.array(mask[i])
        assert np.array_equal(t >= V, m == 0)


def test_argument_errors(assets, capsys):
    with pytest.raises(SystemExit):
        make_enclone.main(["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"],
                           "--input-prefix", "x"])
    assert "go together" in capsys.readouterr().err
