"""The benchmarks in the layout users download them, read from a few real-format records written
here (nothing is downloaded): XNLI / XNLI-MT TSVs, XQuAD / MLQA SQuAD-format JSON under their
file names, Flores-101 / Flores-200 ``devtest`` directories; and the papers' scoring definitions
(SQuAD v1.1 / MLQA exact match and F1, x-LLM's containment match, spBLEU) on hand-made cases."""

import json
import os

import pytest

from megatron_prealign.evaluation import classification
from megatron_prealign.evaluation.model_loading import EvaluationError

# XNLI 1.0's test / dev header (xnli.test.tsv), and XNLI-MT 1.0's training header.
XNLI_HEADER = ("language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tpromptID\tpairID\tgenre\tlabel1\tlabel2\tlabel3\t"
               "label4\tlabel5\tsentence1_tokenized\tsentence2_tokenized\tmatch")


def _xnli_row(language, label, premise, hypothesis):
    cells = [language, label, "( x )", "( y )", "(ROOT x)", "(ROOT y)", premise, hypothesis, "1", "1",
             "facetoface", label, label, label, label, label, premise, hypothesis, "True"]
    return "\t".join(cells)


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def test_xnli_test_file_and_xnli_mt_training_file_share_label_words(tmp_path):
    test = _write(str(tmp_path / "XNLI-1.0" / "xnli.test.tsv"), [
        XNLI_HEADER,
        _xnli_row("de", "contradiction", "Er schläft.", "Er rennt."),
        _xnli_row("de", "entailment", "Er schläft tief.", "Er schläft."),
        _xnli_row("zh", "neutral", "他在睡觉。", "他很累。"),
    ])
    # XNLI-MT's English training file: "premise hypo label", the third label spelt "contradictory";
    # a quote inside a sentence is text (the file is not CSV-quoted).
    train = _write(str(tmp_path / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv"), [
        "premise\thypo\tlabel",
        "He said \"no\" twice .\tHe agreed .\tcontradictory",
        "The cat sleeps .\tAn animal sleeps .\tentailment",
        "It rains .\tThe streets are wet .\tneutral",
    ])
    german = classification.read_examples(test, "--test", "de")
    assert [e["label"] for e in german] == ["contradiction", "entailment"]
    assert german[0]["premise"] == "Er schläft." and german[0]["hypothesis"] == "Er rennt."
    examples = classification.read_examples(train, "--train")
    assert examples[0] == {"premise": 'He said "no" twice .', "hypothesis": "He agreed .",
                           "label": "contradiction"}
    words = classification.label_words_from(examples, None)
    assert words == list(classification.XNLI_LABELS)
    classification.check_labels(words, {"--test de": german})  # raised before: 'contradiction' unseen
    records = tmp_path / "records.jsonl"
    classification.write_instruction_records(str(records), examples, words)
    assert json.loads(records.read_text(encoding="utf-8").splitlines()[0])["output"] == "contradiction"
    with pytest.raises(EvaluationError, match="has no examples of language fr"):
        classification.read_examples(test, "--test", "fr")
