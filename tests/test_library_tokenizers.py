"""The preprocessing path's library tokenizers (megatron_prealign/data/library_tokenizers.py) give
megatron-core's ids, special ids, vocabulary size and text; where they cannot, megatron-core's
own tokenizer is used.

* ``HuggingFaceTokenizer`` directory -> ``tokenizers`` from tokenizer.json, against
  megatron-core's wrapper (transformers.AutoTokenizer), with and without
  ``--tokenizer-hf-no-include-special-tokens``, a post-processor that adds a BOS, a normalizer;
  directories transformers would encode differently are refused.
* ``GPT2BPETokenizer`` -> ``tokenizers`` from vocab.json + merges.txt, against megatron-core's
  wrapper (its "gpt2" hub name pointed at a local directory: no download) and against GPT-2's
  pure-Python BPE (Megatron-LM's original gpt2_tokenization algorithm, written out below).
* ``TikTokenizer`` -> ``tiktoken`` directly, against megatron-core's TikTokenizer; exact
  character offsets; codeswitched preprocessing equals tokenizing the switched text.
"""

import json
import os
import shutil

import numpy as np
import pytest
import regex

from megatron_prealign.data.library_tokenizers import HFFastText, TikTokenText
from megatron_prealign.data.text_encoder import TextEncoder, token_indices_in_span
from megatron_prealign.data.tokenizer import build_text_tokenizer, build_tokenizer, tokenizer_spec
from megatron_prealign.data.tokenizer_training import write_gpt2_files, write_tiktoken_vocab

EDGE_TEXTS = [
    "", " ", "x", "  two  spaces\tand\ttabs\n\nnew lines ", "trailing   ", "\r\nwindows\r\nlines",
    "银行 naïve Straße 12 km! 1234567 3.14", "Ünïcödé ☃ emoji 🙂🙂 and 👩‍👩‍👧 zwj",
    "e\u0301 combining, \u00a0nbsp\u2009thin, ﬁ ligature, ＦＵＬＬ width", "مرحبا بالعالم עברית",
    "it's they'll I'm we've you're he'd 'quoted'", "<|endoftext|>", "a<|endoftext|>b <pad> <s></s>",
    "<unk> <mask> <SPECIAL_7> <SPECIAL_999> <|endoftext|><|endoftext|>", "   \n\t  ", "-_-_ ++ ...!!!",
]


def _texts(assets, n=15):
    texts = []
    for name in ("en", "de", "zh"):
        with open(assets[name], encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle][:n]
    return texts + EDGE_TEXTS


def _same_tokenizer(ours, theirs, texts, encoder_too=True):
    assert (ours.vocab_size, ours.eod, ours.bos) == (theirs.vocab_size, theirs.eod, theirs.bos)
    for text in texts:
        ids = ours.tokenize(text)
        assert ids == list(theirs.tokenize(text)), text
        assert ours.detokenize(ids) == theirs.detokenize(ids), text
    if encoder_too:
        a, b = TextEncoder(ours), TextEncoder(theirs)
        assert a.supports_offsets and b.supports_offsets
        ids, lengths = a.encode_batch(texts)
        assert ids.tolist() == [i for t in texts for i in theirs.tokenize(t)]
        assert lengths.tolist() == [len(theirs.tokenize(t)) for t in texts]
        assert (a.token_classes()[0] == b.token_classes()[0]).all()


# --------------------------------------------------------------------------- Hugging Face


def _hf_variant(assets, tmp_path, name, config=None, edit=None):
    """A copy of the test byte-level BPE directory with tokenizer_config.json entries replaced
    and the tokenizers object edited."""
    from tokenizers import Tokenizer

    out = tmp_path / name
    shutil.copytree(assets["hf"], out)
    if config:
        path = out / "tokenizer_config.json"
        data = json.loads(path.read_text())
        data.update(config)
        path.write_text(json.dumps(data))
    if edit:
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        edit(tok)
        tok.save(str(out / "tokenizer.json"))
    return str(out)


def _with_bos(tok):
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", 0)])


def _with_nfkc(tok):
    from tokenizers import normalizers

    tok.normalizer = normalizers.NFKC()


@pytest.mark.parametrize("variant", ["as-trained", "bos-post-processor", "nfkc"])
@pytest.mark.parametrize("no_special", [False, True])
def test_hf_directory_tokenizer_equals_megatron_core(assets, tmp_path, variant, no_special):
    path = {"as-trained": lambda: assets["hf"],
            "bos-post-processor": lambda: _hf_variant(assets, tmp_path, "bos", edit=_with_bos),
            "nfkc": lambda: _hf_variant(assets, tmp_path, "nfkc", edit=_with_nfkc)}[variant]()
    spec = tokenizer_spec(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=path,
                          tokenizer_hf_no_include_special_tokens=no_special)
    ours, theirs = build_text_tokenizer(spec), build_tokenizer(**spec)
    assert isinstance(ours, HFFastText)
    _same_tokenizer(ours, theirs, _texts(assets))
    if variant == "bos-post-processor":  # the flag matters here: a BOS or not
        assert (ours.tokenize("x")[0] == 0) is not no_special


def test_hf_directories_transformers_encodes_differently_are_refused(assets, tmp_path):
    from tokenizers import Tokenizer

    cases = {
        "add-bos": _hf_variant(assets, tmp_path, "add-bos", {"add_bos_token": True}),
        "class": _hf_variant(assets, tmp_path, "class", {"tokenizer_class": "GPT2Tokenizer"}),
        "new-special": _hf_variant(assets, tmp_path, "new-special", {"mask_token": "<mask>"}),
        "truncation": _hf_variant(assets, tmp_path, "truncation",
                                  edit=lambda t: t.enable_truncation(max_length=8)),
    }
    for name, path in cases.items():
        spec = tokenizer_spec(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=path)
        assert not isinstance(build_text_tokenizer(spec), HFFastText), name
    # Refused for a reason: transformers adds the new special token, which the tokenizer.json
    # alone would split into pieces. (Not every refused setting changes the ids of this
    # tokenizer, e.g. add_bos_token; they are refused as transformers may apply them.)
    raw = Tokenizer.from_file(os.path.join(cases["new-special"], "tokenizer.json"))
    theirs = build_tokenizer("HuggingFaceTokenizer", cases["new-special"])
    assert theirs.vocab_size == raw.get_vocab_size() + 1
    assert list(theirs.tokenize("a <mask>")) != raw.encode("a <mask>").ids
    # Settings megatron-core's path handles but ours does not: megatron-core's tokenizer.
    for extra in ({"special_tokens": ["<x>"]}, {"tokenizer_hf_no_use_fast": True}):
        spec = tokenizer_spec(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=assets["hf"], **extra)
        assert not isinstance(build_text_tokenizer(spec), HFFastText)


# --------------------------------------------------------------------------- GPT-2 BPE


@pytest.fixture(scope="module")
def gpt2_files(assets, tmp_path_factory):
    return write_gpt2_files(assets["hf"], str(tmp_path_factory.mktemp("gpt2")))


@pytest.fixture
def local_gpt2_name(tmp_path, monkeypatch):
    """megatron-core's GPT2BPETokenizer loads AutoTokenizer.from_pretrained("gpt2", vocab_file,
    merges_file): "gpt2" pointed at a local directory holding what the hub's gpt2 repository
    gives it besides the two files (model type, maximum length)."""
    from megatron.core.tokenizers.text.libraries import megatron_hf_tokenizer

    hub = tmp_path / "gpt2-hub"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (hub / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    entry = dict(megatron_hf_tokenizer.MEGATRON_CONFIG_MAP["GPT2BPETokenizer"], tokenizer_name=str(hub))
    monkeypatch.setitem(megatron_hf_tokenizer.MEGATRON_CONFIG_MAP, "GPT2BPETokenizer", entry)


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class PythonGPT2BPE:
    """GPT-2's original byte-level BPE in pure Python (OpenAI's encoder.py, as in Megatron-LM's
    gpt2_tokenization.py): the reference the library encoders must reproduce."""

    PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, vocab_file, merges_file):
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(merges_file, encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line.strip()]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text):
        ids = []
        for piece in self.PATTERN.findall(text):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(chars))
        return ids


@pytest.mark.parametrize("no_special", [False, True])
def test_gpt2_bpe_equals_megatron_core_and_python_bpe(assets, gpt2_files, local_gpt2_name, no_special):
    vocab, merges = gpt2_files
    spec = tokenizer_spec(tokenizer_type="GPT2BPETokenizer", vocab_file=vocab, merge_file=merges,
                          tokenizer_hf_no_include_special_tokens=no_special)
    ours, theirs = build_text_tokenizer(spec), build_tokenizer(**spec)
    assert isinstance(ours, HFFastText)
    texts = _texts(assets)
    _same_tokenizer(ours, theirs, texts)
    python = PythonGPT2BPE(vocab, merges)
    for text in texts:
        if "<|endoftext|>" not in text:  # megatron-core (transformers) keeps it one special token
            assert ours.tokenize(text) == python.encode(text), text
    assert ours.tokenize("a<|endoftext|>b") == python.encode("a") + [ours.eod] + python.encode("b")


def test_gpt2_bpe_with_special_tokens_uses_megatron_core(gpt2_files, local_gpt2_name):
    vocab, merges = gpt2_files
    spec = tokenizer_spec(tokenizer_type="GPT2BPETokenizer", vocab_file=vocab, merge_file=merges,
                          special_tokens=["<extra>"])
    tok = build_text_tokenizer(spec)
    assert not isinstance(tok, HFFastText)
    assert tok.tokenize("x <extra>")[-1] == tok.vocab_size - 1


# --------------------------------------------------------------------------- tiktoken


@pytest.fixture(scope="module")
def tiktoken_spec(assets, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiktoken") / "vocab.json")
    size = write_tiktoken_vocab(assets["hf"], path)
    return tokenizer_spec(tokenizer_type="TikTokenizer", tokenizer_model=path, vocab_size=1000 + size)


def test_tiktoken_constants_are_megatron_cores():
    from megatron.core.tokenizers.text.libraries import tiktoken_tokenizer as mc

    from megatron_prealign.data import library_tokenizers as ours

    assert ours.TIKTOKEN_PATTERNS == {"v1": mc._PATTERN_TIKTOKEN_V1, "v2": mc._PATTERN_TIKTOKEN_V2}
    assert ours.TIKTOKEN_SPECIAL_TOKENS == mc.SPECIAL_TOKENS
    assert ours.TIKTOKEN_DEFAULT_VOCAB == mc.DEFAULT_TIKTOKEN_MAX_VOCAB


@pytest.mark.parametrize("settings", [{}, {"tiktoken_pattern": "v1"},
                                      {"tiktoken_num_special_tokens": 20},
                                      {"special_tokens": ["<unk>", "<s>", "</s>", "<mask>", "<pad>",
                                                          "<cls>", "<sep>", "<|im_start|>"]}])
def test_tiktoken_equals_megatron_core(assets, tiktoken_spec, settings):
    spec = dict(tiktoken_spec, **settings)
    if "tiktoken_num_special_tokens" in settings:
        spec["vocab_size"] -= 1000 - settings["tiktoken_num_special_tokens"]
    ours, theirs = build_text_tokenizer(spec), build_tokenizer(**spec)
    assert isinstance(ours, TikTokenText)
    _same_tokenizer(ours, theirs, _texts(assets) + ["<|im_start|>user x"])
    assert ours.tokenize("<s>") == [ours.bos]


def test_tiktoken_offsets_are_exact(assets, tiktoken_spec):
    encoder = TextEncoder(build_text_tokenizer(tiktoken_spec))
    encoding = encoder._tt[0]
    for text in _texts(assets):
        ids, offsets = encoder.encode_with_offsets(text)
        assert ids == encoder.encode(text)
        pos = 0
        for i, (s, e) in zip(ids, offsets):
            piece = encoding.decode_single_token_bytes(i)
            # the token's bytes lie within its characters' bytes, and those characters are the
            # ones the bytes touch
            assert len(text[:s].encode()) <= pos and pos + len(piece) <= len(text[:e].encode())
            assert len(text[: s + 1].encode()) > pos and len(text[: e - 1].encode()) < pos + len(piece)
            pos += len(piece)
        assert pos == len(text.encode())
        for p, ch in enumerate(text):
            if not ch.isspace():
                assert token_indices_in_span(offsets, p, p + 1)
    with pytest.raises(UnicodeEncodeError):
        encoder.encode_with_offsets("lone \ud800 surrogate")
    # encode_batch repairs lone surrogates as tiktoken's encode does
    assert encoder.encode_batch(["a \ud800 b"])[0].tolist() == encoder.encode("a \ud800 b")


def test_megatron_core_tiktokenizer_gets_the_fast_path(tiktoken_spec):
    encoder = TextEncoder(build_tokenizer(**tiktoken_spec))
    assert encoder.supports_offsets and encoder._tt is not None
    assert encoder.form_ids("bank") == TextEncoder(build_text_tokenizer(tiktoken_spec)).form_ids("bank")


@pytest.mark.parametrize("family", ["tiktoken", "gpt2"])
def test_codeswitched_preprocessing_equals_tokenizing_the_switched_text(
        assets, tmp_path, tiktoken_spec, gpt2_files, family):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.cli import preprocess_data

    if family == "tiktoken":
        flags = ["--tokenizer-type", "TikTokenizer", "--tokenizer-model", tiktoken_spec["tokenizer_model"],
                 "--vocab-size", str(tiktoken_spec["vocab_size"])]
        spec = tiktoken_spec
    else:
        flags = ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", gpt2_files[0],
                 "--merge-file", gpt2_files[1]]
        spec = tokenizer_spec(tokenizer_type="GPT2BPETokenizer", vocab_file=gpt2_files[0],
                              merge_file=gpt2_files[1])
    prefix = str(tmp_path / "out")
    rc = preprocess_data.main(["--input", assets["en"], "--json-keys", "text", "--output-prefix", prefix,
                               *flags, "--alignment-table", assets["table"], "--codeswitch-ratio",
                               "0.3", "--append-eod", "--workers", "2", "--no-progress"])
    assert rc == 0
    tok = build_text_tokenizer(spec)
    tokens = IndexedDataset(prefix + "_text_document")
    masks = IndexedDataset(prefix + "_text_document_loss_mask")
    with open(assets["en"], encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    switched = 0
    for i, text in enumerate(texts):
        ids, mask = np.array(tokens[i]).tolist(), np.array(masks[i])
        assert ids[-1] == tok.eod
        if mask.all():
            assert ids[:-1] == tok.tokenize(text)
        else:
            switched += 1
            assert ids[:-1] == tok.tokenize(tok.detokenize(ids[:-1]))  # as if the text were switched
    assert switched > 10
