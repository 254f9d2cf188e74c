"""tools/train_tokenizer.py: weighted sampling, byte fallback, loadable through megatron-core."""

import os
import re

import pytest

from megatron_prealign.data.synthetic import make_corpus
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("tok_corpus")), n_english=60, n_other=30)


def test_sentencepiece_weights_and_byte_fallback(corpus, tmp_path, capsys):
    prefix = str(tmp_path / "spm")
    rc = train_tokenizer.main([
        "--input", corpus["en"], corpus["zh"], "--weights", "3", "1", "--vocab-size", "500",
        "--model-prefix", prefix, "--max-sentences", "4000", "--no-hard-vocab-limit",
        "--threads", "1", "--no-progress",
    ])
    assert rc == 0
    out = capsys.readouterr().out
    counts = [tuple(int(x) for x in re.findall(r"(\d+) lines, (\d+) sampled", line)[0])
              for line in out.splitlines() if "sampled" in line]
    (en_lines, en_sampled), (zh_lines, zh_sampled) = counts
    total = min(4000, en_lines + zh_lines)  # never more lines than the corpus has
    assert en_sampled == round(total * 3 / 4) and zh_sampled == round(total / 4)
    assert zh_sampled > zh_lines  # the small, highly weighted file is repeated
    assert os.path.exists(prefix + ".model") and os.path.exists(prefix + ".vocab")
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    enc = TextEncoder(build_tokenizer("SentencePieceTokenizer", prefix + ".model"))
    text = "The bank of the river. Ωmega ☃ 😀 Ünïcode"  # unseen characters: byte fallback
    ids = enc.encode(text)
    assert enc.decode(ids) == text and enc.eod == 2


def test_byte_level_bpe_directory(corpus, tmp_path):
    out = str(tmp_path / "bbpe")
    rc = train_tokenizer.main(["--input", corpus["en"], corpus["de"], "--vocab-size", "400",
                               "--model-prefix", out, "--model-type", "byte-bpe", "--no-progress"])
    assert rc == 0
    enc = TextEncoder(build_tokenizer("HuggingFaceTokenizer", out))
    text = "Die Brücke über den Fluss: bank ☃\n  end"
    assert enc.supports_offsets and enc.decode(enc.encode(text)) == text


def test_bad_weights(corpus, tmp_path, capsys):
    rc = train_tokenizer.main(["--input", corpus["en"], "--weights", "1", "2", "--vocab-size", "300",
                               "--model-prefix", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "--weights has 2 values for 1 input files" in capsys.readouterr().err
