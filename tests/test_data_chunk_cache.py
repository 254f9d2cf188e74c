"""The chunk cache encodes SentencePiece BPE text to exactly SentencePiece's ids, and refuses the
models where chunks would not add up."""

import json
import random

import numpy as np
import pytest
import sentencepiece as spm

from megatron_prealign.data.chunk_cache import ChunkCache, ChunkCacheMismatch, refusal
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer

TRICKY = [
    "", " ", "   ", "a", " a", "a ", "a  b", "\n", "x\n\ny", "tab\tsep", "nbsp\u00a0word",
    "ideo\u3000space", "\u3000lead", "trail\u3000", "ﬁ ligature ﬀ", "½ Ⅻ ①", "e\u0301 a\u0300",
    " \u0301 combining after space", "1,234.5 and 1 234", "ünïcödé Straße ÄÖÜ", "银行 在 河边",
    "emoji 😀 🚀", "line\u2028sep", "zero\u200bwidth", "<s> </s> <unk> markup", "\u2581literal",
]


def _sentences(assets):
    out = []
    for key in ("en", "de", "zh"):
        with open(assets[key], encoding="utf-8") as handle:
            out.extend(json.loads(line)["text"] for line in handle)
    return out


def _documents(assets, seed=0, count=300):
    """Corpus documents with spaces, newlines and odd characters mixed in."""
    rng = random.Random(seed)
    sentences = _sentences(assets)
    docs = []
    for _ in range(count):
        parts = [rng.choice(sentences if rng.random() < 0.8 else TRICKY) for _ in range(rng.randint(1, 6))]
        docs.append(rng.choice([" ", "  ", "\n", " \n "]).join(parts))
    return docs + TRICKY


def _train(tmp_path, assets, name, **options):
    prefix = str(tmp_path / name)
    settings = dict(vocab_size=400, model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                    input_sentence_size=0, minloglevel=2, num_threads=1)
    settings.update(options)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_sentences(assets)), model_prefix=prefix, **settings)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def _check_batches(cache, processor, docs, batch=37):
    for i in range(0, len(docs), batch):
        texts = docs[i:i + batch]
        ids, lengths = cache.encode_batch(texts)
        expected = processor.encode(texts)
        assert lengths.tolist() == [len(e) for e in expected]
        assert ids.dtype == np.int64 and ids.tolist() == [t for e in expected for t in e]


def test_project_model_ids_equal_sentencepiece(assets):
    """The tests' (and tools/train_tokenizer.py's) BPE: byte fallback, split digits, nmt_nfkc."""
    processor = spm.SentencePieceProcessor(model_file=assets["sp"])
    assert refusal(processor) is None
    cache = ChunkCache(processor)
    docs = _documents(assets)
    _check_batches(cache, processor, docs)
    _check_batches(cache, processor, docs)  # now from the cache
    assert cache.encode_batch([])[0].size == 0


@pytest.mark.parametrize("options", [
    {"normalization_rule_name": "identity"},
    {"normalization_rule_name": "nfkc", "split_digits": True},
    {"byte_fallback": False, "character_coverage": 0.98},  # unknown characters
    {"user_defined_symbols": ["<sep>", "markup"]},
], ids=["identity", "nfkc-digits", "unk", "user-symbols"])
def test_other_bpe_settings_ids_equal_sentencepiece(tmp_path, assets, options):
    processor = _train(tmp_path, assets, "m", **options)
    assert refusal(processor) is None
    _check_batches(ChunkCache(processor), processor, _documents(assets, seed=1))


def test_cache_starting_over_keeps_ids(assets):
    processor = spm.SentencePieceProcessor(model_file=assets["sp"])
    cache = ChunkCache(processor, max_chunks=50)  # smaller than one batch's distinct chunks
    docs = _documents(assets, seed=2, count=120)
    for i in range(0, len(docs), 10):
        texts = docs[i:i + 10]
        _check_batches(cache, processor, texts)
        distinct = len({c for t in texts for c in cache.split(t)})
        assert len(cache._index) <= max(50, distinct)  # it started over instead of growing


@pytest.mark.parametrize("options, reason", [
    ({"model_type": "unigram"}, "not a BPE model"),
    ({"remove_extra_whitespaces": False}, "extra whitespace"),
    ({"split_by_whitespace": False}, "cross whitespace"),
    ({"treat_whitespace_as_suffix": True}, "cross whitespace"),
    ({"add_dummy_prefix": False}, "dummy prefix"),
])
def test_refused_models(tmp_path, assets, options, reason):
    processor = _train(tmp_path, assets, "m", **options)
    assert reason in refusal(processor)
    with pytest.raises(ValueError, match="chunk by chunk"):
        ChunkCache(processor)
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", str(tmp_path / "m.model")), chunk_cache=True)
    assert encoder._chunk_cache is None  # SentencePiece's own batch encoder instead
    texts = _documents(assets, seed=3, count=40)
    ids, lengths = encoder.encode_batch(texts)
    assert ids.tolist() == [t for e in processor.encode(texts) for t in e]


def test_refusal_matters_for_extra_whitespace(tmp_path, assets):
    """Where refused, adding up chunk encodings would indeed give other ids."""
    processor = _train(tmp_path, assets, "m", remove_extra_whitespaces=False)
    text = "a  b"
    assert processor.encode(text) != [t for c in text.split(" ") for t in processor.encode(c)]


def test_mismatch_is_detected(assets):
    processor = spm.SentencePieceProcessor(model_file=assets["sp"])
    cache = ChunkCache(processor)
    cache.encode_batch(["the river bank"])
    row = cache._index["river"]
    cache._ids[cache._starts[row]] += 1  # corrupt the cached ids of "river"
    with pytest.raises(ChunkCacheMismatch, match="--no-chunk-cache"):
        cache.encode_batch(["by the river"])


def test_text_encoder_uses_the_cache_only_when_asked(assets):
    tokenizer = build_tokenizer("SentencePieceTokenizer", assets["sp"])
    assert TextEncoder(tokenizer)._chunk_cache is None
    cached = TextEncoder(tokenizer, chunk_cache=True)
    assert cached._chunk_cache is not None
    docs = _documents(assets, seed=4, count=50)
    for a, b in zip(cached.encode_batch(docs), TextEncoder(tokenizer).encode_batch(docs)):
        assert np.array_equal(a, b)


def test_whitespace_constant_is_str_isspace():
    import sys

    from megatron_prealign.data.chunk_cache import WHITESPACE

    assert WHITESPACE == "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def test_odd_whitespace_keeps_ids(assets):
    """Characters nmt_nfkc does not make spaces (vertical tab, \\x1c, \\x85) are never cut at."""
    from megatron_prealign.data.chunk_cache import unlike_space

    processor = spm.SentencePieceProcessor(model_file=assets["sp"])
    assert set(unlike_space(processor)) >= {"\x0b", "\x1c", "\x85"}
    assert "\n" not in unlike_space(processor) and "\t" not in unlike_space(processor)
    docs = [f"a{c}b c{c}{c}d {c}" for c in "\x0b\x1c\x1d\x1e\x1f\x85\n\t\r\x0c\u2028\u3000\xa0"]
    _check_batches(ChunkCache(processor), processor, docs, batch=3)
