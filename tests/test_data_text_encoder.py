"""TextEncoder: fast ids equal megatron-core's tokenize, offsets, running-text word forms."""

import json

import numpy as np
import pytest

from megatron_prealign.data.text_encoder import TextEncoder, token_indices_in_span
from megatron_prealign.data.tokenizer import build_tokenizer


def _texts(assets, n=20):
    texts = []
    for name in ("en", "de", "zh"):
        with open(assets[name], encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle][:n]
    return texts + ["Ünïcödé ☃ emoji 🙂 and tabs\tand  double  spaces", "x"]


def test_fast_path_is_used_and_matches_megatron_tokenize(encoder, assets):
    assert encoder.supports_offsets
    for text in _texts(assets):
        assert encoder.encode(text) == list(encoder.tokenizer.tokenize(text))


def test_round_trip(encoder, assets):
    for text in _texts(assets):
        decoded = encoder.decode(encoder.encode(text))
        if encoder._hf is not None:
            assert decoded == text  # byte-level BPE is lossless
        else:  # SentencePiece (nmt_nfkc) folds whitespace runs/newlines into one space
            assert decoded == " ".join(text.split())


def test_offsets_cover_the_text_in_order(encoder, assets):
    for text in _texts(assets):
        ids, offsets = encoder.encode_with_offsets(text)
        assert ids == encoder.encode(text)
        starts = [s for s, _ in offsets]
        assert starts == sorted(starts)
        assert all(0 <= s <= e <= len(text) for s, e in offsets)
        # Every non-space character lies in some token's span (or at an empty byte piece).
        for pos, ch in enumerate(text):
            if not ch.isspace():
                assert token_indices_in_span(offsets, pos, pos + 1), (text, pos)


@pytest.mark.parametrize("form", ["bank", "Ufer", "银行", "Brücke", "well-known"])
def test_form_ids_are_the_running_text_tokens(encoder, form):
    ids = encoder.form_ids(form)
    assert encoder.decode(ids).strip() == form
    for sentence in (f"We saw the {form} there.", f"Then {form}, again"):
        full = encoder.encode(sentence)
        assert any(full[i : i + len(ids)] == ids for i in range(len(full))), (sentence, ids, full)


def test_encoder_without_offsets_falls_back_to_tokenize():
    null = TextEncoder(build_tokenizer("NullTokenizer", vocab_size=100))
    assert not null.supports_offsets
    assert null.encode("1 2 3") == [1, 2, 3]
    with pytest.raises(NotImplementedError, match="character offsets"):
        null.encode_with_offsets("1 2")


def test_encode_batch_equals_encoding_each_text(encoder):
    texts = ["The bank, by the river-side.", "银行 und Straße!", "x", "  two  spaces\nnewline "]
    ids, lengths = encoder.encode_batch(texts)
    assert ids.dtype == np.int64 and lengths.tolist() == [len(encoder.encode(t)) for t in texts]
    assert ids.tolist() == sum((encoder.encode(t) for t in texts), [])
    empty_ids, empty_lengths = encoder.encode_batch([])
    assert empty_ids.size == 0 and empty_lengths.size == 0
    null = TextEncoder(build_tokenizer("NullTokenizer", vocab_size=100))  # no batch encoder
    assert [a.tolist() for a in null.encode_batch(["1 2", "3"])] == [[1, 2, 3], [2, 1]]
