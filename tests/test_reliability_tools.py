"""Reliability of the data tools (issue: data loss, bad input): an output that failed to write
never replaces a good one, and empty or impossible inputs stop with a message, exit status 2."""

import os

import pytest

from megatron_prealign.data.synthetic import make_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("rel_corpus")), n_english=30, n_other=10)


def _train(corpus, prefix, *extra):
    return train_tokenizer.main(["--input", corpus["en"], "--vocab-size", "500", "--model-prefix", prefix,
                                 "--no-hard-vocab-limit", "--threads", "1", "--no-progress", *extra])


def test_tokenizer_on_full_disk_keeps_the_good_model(corpus, tmp_path, monkeypatch, capsys):
    """Full disk simulated the way SentencePiece meets it: its writes silently produce 0-byte
    files and it returns normally."""
    import sentencepiece as spm

    prefix = str(tmp_path / "spm")
    assert _train(corpus, prefix) == 0
    good = open(prefix + ".model", "rb").read(), open(prefix + ".vocab", "rb").read()
    real_train = spm.SentencePieceTrainer.train

    def train_on_full_disk(**kwargs):
        real_train(**kwargs)
        for ext in (".model", ".vocab"):
            open(kwargs["model_prefix"] + ext, "wb").close()

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", train_on_full_disk)
    capsys.readouterr()
    assert _train(corpus, prefix, "--seed", "1") != 0
    captured = capsys.readouterr()
    assert "wrote" not in captured.out and "no space left" in captured.err
    assert (open(prefix + ".model", "rb").read(), open(prefix + ".vocab", "rb").read()) == good
    assert sorted(os.listdir(tmp_path)) == ["spm.model", "spm.vocab"]  # no temporary files left


def test_tokenizer_bad_output_directory_and_empty_input(corpus, tmp_path, capsys):
    assert _train(corpus, str(tmp_path / "missing" / "spm")) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc = train_tokenizer.main(["--input", str(empty), "--vocab-size", "300", "--model-prefix",
                               str(tmp_path / "spm"), "--no-progress"])
    assert rc == 2 and "nothing to train on" in capsys.readouterr().err


from megatron_prealign.cli import build_alignment_table
from megatron_prealign.cli import preprocess_data


def _preprocess(assets, tmp_path, source, *extra):
    prefix = str(tmp_path / "out")
    return preprocess_data.main(["--input", source, "--output-prefix", prefix, "--tokenizer-type",
                                 "SentencePieceTokenizer", "--tokenizer-model", assets["sp"],
                                 "--no-progress", *extra]), prefix


def test_table_with_ids_beyond_the_vocabulary_is_refused(assets, tmp_path, capsys):
    import json

    table = tmp_path / "table.jsonl"
    table.write_text(json.dumps({"word": "the", "count": 9, "translations": {"de": ["der"]}}) + "\n"
                     + json.dumps({"word": "bank", "count": 5, "translations": {"enclone": ["bank"]},
                                   "token_ids": {"enclone": [[3946]]}}) + "\n")
    rc, prefix = _preprocess(assets, tmp_path, assets["en"], "--alignment-table", str(table))
    error = capsys.readouterr().err
    assert rc == 2 and f"{table}:2" in error and "token id 3946" in error
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out")]


def test_empty_inputs_are_refused(assets, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, _ = _preprocess(assets, tmp_path, str(empty))
    assert rc == 2 and "no documents" in capsys.readouterr().err
    rc, _ = _preprocess(assets, tmp_path, assets["en"], "--alignment-table", str(empty))
    assert rc == 2 and "no entries" in capsys.readouterr().err
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out")]
    out = str(tmp_path / "table.jsonl")
    rc = build_alignment_table.main(["--input", str(empty), "--dictionary", f"de={assets['dict_de']}",
                                     "--output", out, "--no-progress"])
    assert rc == 2 and "no table written" in capsys.readouterr().err and not os.path.exists(out)
    rc = build_alignment_table.main(["--input", assets["en"], "--dictionary", f"de={assets['dict_de']}",
                                     "--output", str(tmp_path / "nowhere" / "t.jsonl"), "--no-progress"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_missing_tokenizer_model_in_preprocessing(assets, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        preprocess_data.main(["--input", assets["en"], "--output-prefix", str(tmp_path / "o"),
                              "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                              str(tmp_path / "missing.model")])
    assert exit_info.value.code == 2 and "missing.model does not exist" in capsys.readouterr().err


def test_temperature_zero_and_an_empty_last_prediction(tmp_path):
    from megatron_prealign.evaluation.translation import read_lines
    from megatron_prealign.generation.sampling import SamplingParams

    SamplingParams(greedy=True, temperature=0).validate()  # greedy: the temperature plays no part
    with pytest.raises(ValueError, match=r"must be > 0 with --sample \(for argmax decoding leave out --sample"):
        SamplingParams(greedy=False, temperature=0).validate()
    path = tmp_path / "predictions.txt"
    path.write_text("ein Hund\n\n")  # the second prediction is empty
    assert read_lines(str(path), "--predictions") == ["ein Hund", ""]
    path.write_text("ein Hund\nzwei")
    assert read_lines(str(path), "--predictions") == ["ein Hund", "zwei"]
