"""The benchmarks in the layout users download them, read from a few real-format records written
here (nothing is downloaded): XNLI / XNLI-MT TSVs, XQuAD / MLQA SQuAD-format JSON under their
file names, Flores-101 / Flores-200 ``devtest`` directories; the papers' scoring definitions
(SQuAD v1.1 / MLQA exact match and F1, x-LLM's containment match, spBLEU through sacrebleu's
flores101 tokenizer over a local model) on hand-made cases; the xllama protocol's prompts and
generation settings; PreAlign's Figure 6 word perplexity."""

import json
import os

import pytest

from megatron_prealign.cli import evaluate as cli
from megatron_prealign.evaluation import classification, qa, translation
from megatron_prealign.errors import EvaluationError

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


# -- QA: the published exact match / F1 definitions and x-LLM's match ----------------------------

@pytest.mark.parametrize("prediction, gold, language, squad, mlqa", [
    # (EM, F1) by hand from each official script's normalisation
    ("The Eiffel Tower!", "eiffel tower", "en", (1, 1), (1, 1)),
    # curly quotes: Unicode punctuation (MLQA drops it), not string.punctuation (SQuAD keeps it)
    ("\u201cBerlin\u201d", "Berlin", "de", (0, 0), (1, 1)),
    # German articles: only MLQA drops "der"
    ("der Fluss", "Fluss", "de", (0, 2 * 0.5 / 1.5), (1, 1)),
    # zh: SQuAD sees one token each, MLQA one token per character (P 1, R 1/2)
    ("北京", "北京大学", "zh", (0, 0), (0, 2 * 0.5 / 1.5)),
    # Spanish articles: MLQA drops "el"; SQuAD only a / an / the
    ("el río", "río", "es", (0, 2 * 0.5 / 1.5), (1, 1)),
])
def test_em_f1_definitions_of_squad_v11_and_mlqa(prediction, gold, language, squad, mlqa):
    for metric, (em, f1) in (("squad-v1.1", squad), ("mlqa", mlqa)):
        assert qa.exact_match(prediction, gold, language, metric) == em, metric
        assert qa.f1(prediction, gold, language, metric) == pytest.approx(f1), metric


def test_containment_is_xllms_match_and_metric_follows_the_file_name():
    assert qa.contains("It is in Hamburg, Germany.", "hamburg") == 1.0
    assert qa.contains("Hamburg", "Hamburg, Germany") == 0.0  # the gold inside the prediction only
    assert qa.contains("ΑΘΉΝΑ", "αθήνα") == 1.0  # str.lower, as x-LLM
    assert qa.metric_for("/d/MLQA_V1/test/test-context-ar-question-de.json") == "mlqa"
    assert qa.metric_for("/d/xquad/xquad.de.json") == "squad-v1.1"
    assert qa.metric_for("/d/xquad/xquad.de.json", "mlqa") == "mlqa"


def _squad_file(path, context, qas):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"version": "1.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
    return path


def test_xquad_and_mlqa_directories(tmp_path, capsys):
    # XQuAD: xquad.<lang>.json; MLQA_V1: <split>/<split>-context-<c>-question-<q>.json
    xquad = str(tmp_path / "xquad")
    _squad_file(os.path.join(xquad, "xquad.de.json"), "Der Fluss fließt durch Hamburg.",
                [{"id": "x1", "question": "Was fließt?", "answers": [{"text": "Der Fluss", "answer_start": 0}]}])
    mlqa = str(tmp_path / "MLQA_V1")
    _squad_file(os.path.join(mlqa, "test", "test-context-de-question-en.json"), "Der Fluss fließt durch Hamburg.",
                [{"id": "m1", "question": "What flows?", "answers": [{"text": "Der Fluss", "answer_start": 0}]}])
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps({"x1": "Fluss", "m1": "Fluss"}), encoding="utf-8")
    out = str(tmp_path / "qa.json")
    assert cli.main(["qa", "--xquad-dir", xquad, "--language", "de", "--predictions", str(predictions),
                     "--output", out]) == 0
    result = json.load(open(out))
    assert result["em_f1_definition"] == "squad-v1.1" and result["exact_match"] == 0.0  # XTREME: "der" stays
    assert result["input"].endswith("xquad.de.json") and result["protocol"]["name"] == "default"
    assert cli.main(["qa", "--mlqa-dir", mlqa, "--language", "de", "--question-language", "en",
                     "--predictions", str(predictions), "--output", out]) == 0
    result = json.load(open(out))
    assert result["em_f1_definition"] == "mlqa" and result["exact_match"] == 100.0  # MLQA drops "der"
    missing = os.path.join(mlqa, "dev", "dev-context-de-question-de.json")
    assert cli.main(["qa", "--mlqa-dir", mlqa, "--mlqa-split", "dev", "--language", "de",
                     "--predictions", str(predictions), "--output", out]) == 2
    assert missing in capsys.readouterr().err


# -- Flores-101 / Flores-200 directories ---------------------------------------------------------


def test_flores101_and_flores200_devtest_directories(tmp_path, capsys):
    from megatron_prealign.evaluation.benchmarks import flores_file

    en, zh = ["The river is long.", "I like it."], ["河很长。", "我喜欢它。"]
    f101 = str(tmp_path / "flores101_dataset")
    _write(os.path.join(f101, "devtest", "eng.devtest"), en)
    _write(os.path.join(f101, "devtest", "zho_simpl.devtest"), zh)
    f200 = str(tmp_path / "flores200_dataset")
    _write(os.path.join(f200, "devtest", "eng_Latn.devtest"), en)
    _write(os.path.join(f200, "devtest", "zho_Hans.devtest"), zh)
    assert flores_file(f101, "zh") == (os.path.join(f101, "devtest", "zho_simpl.devtest"), "flores101")
    assert flores_file(f200, "zh") == (os.path.join(f200, "devtest", "zho_Hans.devtest"), "flores200")
    assert flores_file(f200, "eng_Latn")[0].endswith("eng_Latn.devtest")  # a Flores code as is
    hyp = _write(str(tmp_path / "hyp.txt"), zh)
    for root in (f101, f200):
        out = str(tmp_path / "mt.json")
        assert cli.main(["translation", "--flores-dir", root, "--direction", "en-zh", "--predictions", hyp,
                         "--output", out]) == 0
        result = json.load(open(out))["directions"]["en-zh"]
        assert result["bleu"] == pytest.approx(100.0) and result["segments"] == 2
        assert result["metric"]["tokenizer"] == "zh"
    assert cli.main(["translation", "--flores-dir", f101, "--direction", "en-de", "--predictions", hyp,
                     "--output", str(tmp_path / "x.json")]) == 2
    assert os.path.join(f101, "devtest", "deu.devtest") in capsys.readouterr().err


# -- the xllama protocol -------------------------------------------------------------------------


def test_xllama_prompts_are_xllms():
    from megatron_prealign.instruct import templates, xllm_data

    assert len(xllm_data.TRANSLATION_INSTRUCTIONS) == 33 == len(set(xllm_data.TRANSLATION_INSTRUCTIONS))
    assert templates.translation_instruction("en", "el", 0, style="xllm") == \
        "Translate the following sentences from English to Modern Greek (1453-)."
    assert templates.translation_instruction("en", "zh", 33, style="xllm") == \
        templates.translation_instruction("en", "zh", 0, style="xllm")
    assert templates.translation_instruction("en", "sw", 1, style="xllm") == \
        "What do the following sentences mean in Swahili (macrolanguage)?"
    assert templates.translation_instruction("en", "el") == "Translate the following sentences from English to Greek."
    prompt = translation.prompts(["Hello."], "en", "el", templates.ALPACA, style="xllm")[0]
    assert prompt == templates.ALPACA.render(
        "Translate the following sentences from English to Modern Greek (1453-).", "Hello.")[0]


def test_protocol_generation_settings():
    from megatron_prealign.evaluation import protocols

    parser = cli.build_parser()
    base = ["--direction", "en-de", "--output", "o.json"]
    args = parser.parse_args(["translation", *base, "--protocol", "xllama"])
    protocol = protocols.resolve(args)
    assert (args.max_new_tokens, protocol.stop, args.sample) == (512, (), False)  # x-LLM: greedy to EOS, 512
    args = parser.parse_args(["qa", "--input", "x.json", "--language", "de", "--output", "o.json"])
    assert protocols.resolve(args).stop == ("\n",) and args.max_new_tokens == 64
    for flags in (["--max-new-tokens", "256"], ["--sample"], ["--stop", "###"], ["--spm-tokenizer", "flores200"]):
        args = parser.parse_args(["translation", *base, "--protocol", "xllama", *flags])
        with pytest.raises(EvaluationError, match="--protocol xllama is fixed"):
            protocols.resolve(args)


def test_xllama_spbleu_is_sacrebleus_flores101_with_the_local_model(tmp_path, assets, capsys, monkeypatch):
    import sacrebleu
    import sentencepiece
    from sacrebleu.tokenizers import tokenizer_spm

    def no_download(*_):
        raise AssertionError("sacrebleu tried to download")

    monkeypatch.setattr(tokenizer_spm, "download_file", no_download)
    src = _write(str(tmp_path / "en.txt"), ["The river was in the city.", "The man is new.", "A cat."])
    ref = _write(str(tmp_path / "de.txt"), ["Der Fluss war in der Stadt.", "Der Mann ist neu.", "Eine Katze."])
    # fragments of at most 3 pieces: no 4-grams at all, where effective order changes BLEU (0 without it)
    hyp = _write(str(tmp_path / "hyp.txt"), ["war in", "ist", "in der"])
    out = str(tmp_path / "mt.json")
    argv = ["translation", "--src", src, "--ref", ref, "--direction", "en-de", "--predictions", hyp,
            "--protocol", "xllama", "--output", out]
    assert cli.main(argv) == 2  # no silent 13a: the message says where the model comes from
    assert translation.SPM_URLS["flores101"] in capsys.readouterr().err and not os.path.exists(out)
    before = tokenizer_spm.SACREBLEU_DIR
    assert cli.main(argv + ["--spm-model", assets["sp"]]) == 0
    assert tokenizer_spm.SACREBLEU_DIR == before
    result = json.load(open(out))
    direction = result["directions"]["en-de"]
    # the reference: BLEU over the model's pieces with effective order, as x-LLM's BLEU(tokenize=
    # "flores101", effective_order=True) computes once sacrebleu holds the model
    processor = sentencepiece.SentencePieceProcessor(model_file=assets["sp"])
    pieces = lambda path: [" ".join(processor.encode(line.rstrip("\n"), out_type=str))  # noqa: E731
                           for line in open(path, encoding="utf-8")]
    expected = sacrebleu.metrics.BLEU(tokenize="none", effective_order=True).corpus_score(pieces(hyp), [pieces(ref)])
    plain = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(pieces(hyp), [pieces(ref)])
    assert plain.score != pytest.approx(expected.score)  # the case tells effective order apart
    assert 0 < direction["spbleu"] < 100
    assert direction["spbleu"] == pytest.approx(expected.score)
    signature = direction["spbleu_signature"]
    assert "tok:flores101" in signature and "eff:yes" in signature and f"version:{sacrebleu.__version__}" in signature
    assert direction["metric"] == {"name": "spbleu", "score": direction["spbleu"], "tokenizer": "flores101",
                                   "signature": signature}
    assert result["protocol"]["name"] == "xllama" and result["protocol"]["headline_metric"] == "spbleu"
    assert len(direction["spbleu_model"]["sha256"]) == 64


@pytest.mark.parametrize("protocol, stop, tokens", [("default", ["\n"], 256), ("xllama", [], 512)])
def test_protocol_reaches_generation(tmp_path, assets, monkeypatch, protocol, stop, tokens):
    """The protocol's prompts, stop strings and token budget are what generation gets (the model
    and decoding are stubbed: their own tests are tests/test_generation.py)."""
    from megatron_prealign.evaluation import downstream
    from megatron_prealign.generation import decoding

    seen = {}

    def fake_generate(model, to_ids, prompts, args, stop=()):
        seen.update(prompts=list(prompts), stop=list(stop), max_new_tokens=args.max_new_tokens, sample=args.sample)
        return ["  Der Fluss.  "] * len(prompts), None

    class Model:
        directory, run_state, seq_length = "ckpt", {"iteration": 1}, 1024

    monkeypatch.setattr(downstream, "_model_and_ids", lambda args: (Model(), None))
    monkeypatch.setattr(decoding, "generate_texts", fake_generate)
    src = _write(str(tmp_path / "en.txt"), ["The river."])
    out = str(tmp_path / "mt.json")
    assert cli.main(["translation", "--load", "ckpt", "--src", src, "--ref", src, "--direction", "en-el",
                     "--spm-model", assets["sp"], "--protocol", protocol, "--output", out]) == 0
    name = "Modern Greek (1453-)" if protocol == "xllama" else "Greek"
    assert f"from English to {name}.\n\n### Input:\nThe river." in seen["prompts"][0]
    assert (seen["stop"], seen["max_new_tokens"], seen["sample"]) == (stop, tokens, False)
    result = json.load(open(out))
    assert result["directions"]["en-el"]["predictions"] == ["Der Fluss."]  # stripped, as x-LLM
    assert (result["max_new_tokens"], result["protocol"]["stop"]) == (tokens, stop)


# -- PreAlign Figure 6: perplexity of words seen / held out / not in the table -------------------


def test_word_groups_and_token_attribution(assets):
    from megatron_prealign.data.alignment_table import TableEntry, is_held_out
    from megatron_prealign.data.text_encoder import TextEncoder
    from megatron_prealign.data.tokenizer import build_tokenizer
    from megatron_prealign.evaluation import word_perplexity

    # words chosen so that the hash split puts one in each group at fraction 0.5, seed 0
    entries = [TableEntry("river", translations={"de": ["Fluss"]}), TableEntry("money", translations={"de": ["Geld"]}),
               TableEntry("house", translations={"de": ["Haus"]}), TableEntry("tree", translations={"de": ["Baum"]})]
    held = {e.word: is_held_out(e.word, 0.5, 0) for e in entries}
    assert set(held.values()) == {True, False}, held
    lookup = word_perplexity.word_groups(entries, "de", 0.5, 0)
    assert lookup == {e.translations["de"][0].lower(): "held_out" if held[e.word] else "seen" for e in entries}
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", assets["sp"]))
    texts = ["Der Fluss und das Geld.", "Haus, Baum!"]
    tokens, masks, words = word_perplexity.group_stream(texts, encoder, lookup, eod=2, bos=None)
    assert sum(masks.values()).tolist() == [1] * len(tokens)  # each token in exactly one group
    assert words["not_in_table"] == 3  # der, und, das
    for text in texts:
        ids, offsets = encoder.encode_with_offsets(text)
        for form in ("Fluss", "Geld", "Haus", "Baum"):
            if form in text:
                start = text.index(form)
                covering = [i for i, (s, e) in enumerate(offsets) if s < start + len(form) and max(e, s + 1) > start]
                base = 0 if text is texts[0] else len(encoder.encode_with_offsets(texts[0])[0]) + 1
                group = lookup[form.lower()]
                assert all(masks[group][base + i] == 1 for i in covering), form
    assert masks["other"][len(encoder.encode_with_offsets(texts[0])[0])] == 1  # the end of document
    with pytest.raises(EvaluationError, match="no forms of language 'zh'"):
        word_perplexity.word_groups(entries, "zh", 0.5, 0)


def _word_perplexity_rank(argv):
    from megatron_prealign.cli import evaluate as evaluate_cli

    result = evaluate_cli.run(evaluate_cli.build_parser().parse_args(argv))
    return json.dumps(result)


def test_word_perplexity_on_a_checkpoint(tmp_path):
    """A tiny model trained with pre-alignment (30% of the table held out): the groups'
    perplexities, whose token-weighted losses add up to the whole stream's, and the plot."""
    from megatron_prealign.testing import pretrain_case
    from tests.dist_utils import run_distributed

    data = pretrain_case.prepare_data(str(tmp_path / "data"))
    work = str(tmp_path / "train")
    os.makedirs(work)
    flags = dict(pretrain_case.alignment_flags(data), prealign_iters=1, alignment_held_out_fraction=0.3,
                 save=os.path.join(work, "ckpt"))
    run_distributed(pretrain_case.run_pretrain, 1, pretrain_case.base_argv(data, work, train_iters=2, **flags))
    plot = str(tmp_path / "fig6.png")
    argv = ["word-perplexity", "--load", os.path.join(work, "ckpt"), "--output", str(tmp_path / "wp.json"),
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", data["sp"],
            "--jsonl", os.path.join(os.path.dirname(data["sp"]), "de.jsonl"), "--language", "de",
            "--alignment-table", data["table"], "--alignment-held-out-fraction", "0.3", "--max-tokens", "400",
            "--plot", plot]
    (result,) = run_distributed(_word_perplexity_rank, 1, argv)
    result = json.loads(result)
    groups = result["groups"]
    assert all(groups[g]["tokens"] > 0 for g in ("seen", "held_out", "not_in_table"))
    assert sum(g["tokens"] for g in groups.values()) == result["all"]["tokens"] == 400
    total = sum(g["loss"] * g["tokens"] for g in groups.values() if g["tokens"])
    assert total == pytest.approx(result["all"]["loss"] * result["all"]["tokens"], rel=1e-6)
    assert os.path.getsize(plot) > 0 and json.load(open(tmp_path / "wp.json"))["groups"] == groups
