"""Metrics of the downstream evaluations on fixtures with known results, through
``tools/evaluate.py ... --predictions`` (no model): sacrebleu's documented BLEU example, the zh
tokenizer, spBLEU with a local SentencePiece model, MLQA / SQuAD EM and F1 on constructed answers,
containment accuracy, and bad input (exit 2, nothing written)."""

import json
import os

import pytest

from megatron_prealign.cli import evaluate as cli
from megatron_prealign.evaluation import qa, translation


def _evaluate(argv):
    return cli.main(argv)


def _lines(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return str(path)


def test_bleu_of_sacrebleus_documented_example():
    # sacrebleu README: BLEU = 48.53 with these hypotheses and two reference streams.
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    result = translation.score(hyps, refs, "en")
    assert round(result["bleu"], 2) == 48.53
    assert "tok:13a" in result["bleu_signature"] and "nw:2" in result["chrf++_signature"]
    assert result["spbleu"].startswith("not computed") and result["comet"].startswith("not computed")


def test_chinese_uses_the_zh_tokenizer():
    hyps, refs = ["我喜欢这条河。"], ["我喜欢那条河。"]
    zh = translation.score(hyps, refs, "zh")
    assert "tok:zh" in zh["bleu_signature"]
    # zh splits characters: 5 of 6 unigrams match; 13a would see one token per sentence (BLEU 0).
    assert 0 < zh["bleu"] < 100
    assert translation.score(hyps, refs, "de")["bleu"] == 0.0
    assert translation.score(refs, refs, "zh")["bleu"] == pytest.approx(100.0)


def test_translation_from_predictions_file_with_spbleu(tmp_path, assets):
    src = _lines(tmp_path / "en.txt", ["The river was in the city.", "The man is new."])
    ref = _lines(tmp_path / "de.txt", ["Der fluss war in der stadt.", "Der mann ist neu."])
    hyp = _lines(tmp_path / "hyp.txt", ["Der fluss war in der stadt.", "Der mann ist neu."])
    out = str(tmp_path / "mt.json")
    assert _evaluate(["translation", "--src", src, "--ref", ref, "--direction", "en-de", "--predictions", hyp,
                      "--spm-model", assets["sp"], "--output", out]) == 0
    result = json.load(open(out))["directions"]["en-de"]
    assert [result[k] for k in ("bleu", "chrf++", "spbleu")] == pytest.approx([100.0] * 3)
    assert result["comet"].startswith("not computed")


def test_qa_metrics_on_constructed_answers():
    # (prediction, gold, language) -> (EM, F1, containment), computed by hand from the MLQA rules
    cases = [
        ("Eiffel Tower!", "the Eiffel Tower", "en", 1.0, 1.0, 0.0),  # article + punctuation dropped
        ("Paris", "Paris France", "en", 0.0, 2 * 1 * 0.5 / 1.5, 0.0),  # P 1, R 1/2
        ("北京", "北京大学", "zh", 0.0, 2 * 1 * 0.5 / 1.5, 0.0),  # characters are tokens
        ("«Berlin»", "Berlin", "de", 1.0, 1.0, 1.0),  # « » are Unicode punctuation (Pi / Pf)
        ("Sie wohnt in der Stadt Hamburg", "Hamburg", "de", 0.0, 2 * (1 / 5) * 1 / (1 + 1 / 5), 1.0),
    ]
    for prediction, gold, language, em, f1, contained in cases:
        assert qa.exact_match(prediction, gold, language) == em, prediction
        assert qa.f1(prediction, gold, language) == pytest.approx(f1), prediction
        assert qa.contains(prediction, gold) == contained, prediction


def test_qa_prompt_is_the_reference_codes():
    from megatron_prealign.instruct.templates import ALPACA

    item = {"id": "1", "context": " 长江很长。 ", "question": "什么很长？", "answers": ["长江"]}
    (prompt,) = qa.prompts([item], "zh", ALPACA)
    assert prompt == ALPACA.render("请根据以下段落，回答问题", "段落: 长江很长。\n问题: 什么很长？\n答案: ")[0]
    custom = qa.prompts([item], "de", ALPACA, "Beantworte die Frage.", "Text: {context} Frage: {question}")
    assert "### Input:\nText: 长江很长。 Frage: 什么很长？" in custom[0]


def _squad(path, questions):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "Der Fluss fließt durch Hamburg.", "qas": questions}]}]}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
    return str(path)


def test_qa_from_predictions_file(tmp_path):
    squad = _squad(tmp_path / "xquad.de.json", [
        {"id": "q1", "question": "Wo?", "answers": [{"text": "Hamburg", "answer_start": 23}]},
        {"id": "q2", "question": "Was?", "answers": [{"text": "der Fluss", "answer_start": 0},
                                                      {"text": "Fluss", "answer_start": 4}]},
    ])
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({"q1": "in Hamburg", "q2": "Der Fluss."}), encoding="utf-8")
    out = str(tmp_path / "qa.json")
    assert _evaluate(["qa", "--input", squad, "--language", "de", "--predictions", str(predictions),
                      "--qa-metric", "mlqa", "--output", out]) == 0
    result = json.load(open(out))
    # q1: EM 0, F1 2/3 ("in hamburg" vs "hamburg"), contained; q2: EM 1 ("der" is a German article).
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["containment_accuracy"] == pytest.approx(100.0)


@pytest.mark.parametrize("case, message", [
    ("malformed squad", "qas[0] needs 'id', 'question' and a non-empty 'answers'"),
    ("missing prediction", "no prediction for 1 question"),
    ("empty source", "is empty: nothing to evaluate"),
    ("line count", "has 2 lines but --ref"),
    ("unknown language", "unknown language code 'xx'"),
    ("no checkpoint", "give --load CHECKPOINT"),
    ("no qa prompt", "has no QA prompt"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case, message):
    src = _lines(tmp_path / "en.txt", ["a b", "c d"])
    ref = _lines(tmp_path / "de.txt", ["a b"])
    out = str(tmp_path / "out.json")
    squad_ok = [{"id": "q1", "question": "Wo?", "answers": [{"text": "Hamburg"}]}]
    argv = {
        "malformed squad": ["qa", "--input", _squad(tmp_path / "bad.json", [{"id": "q1", "question": "Wo?",
                                                                             "answers": []}]),
                            "--language", "de", "--predictions", _lines(tmp_path / "p.json", ["{}"])],
        "missing prediction": ["qa", "--input", _squad(tmp_path / "ok.json", squad_ok), "--language", "de",
                               "--predictions", _lines(tmp_path / "p.json", ["{}"])],
        "empty source": ["translation", "--src", _lines(tmp_path / "e.txt", []), "--ref", ref,
                         "--direction", "en-de", "--predictions", ref],
        "line count": ["translation", "--src", src, "--ref", ref, "--direction", "en-de", "--predictions", ref],
        "unknown language": ["translation", "--src", src, "--ref", src, "--direction", "en-xx",
                             "--predictions", src],
        "no checkpoint": ["translation", "--src", src, "--ref", src, "--direction", "en-de"],
        "no qa prompt": ["qa", "--input", _squad(tmp_path / "ok.json", squad_ok), "--language", "de"],
    }[case]
    assert _evaluate(argv + ["--output", out]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out)
