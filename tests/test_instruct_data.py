"""Instruction data: exact templates, answer-only loss masks, formats, recipes, budgets,
determinism across workers, bad input (tools/build_instruction_data.py)."""

import json
import os

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import build_tokenizer
from megatron_prealign.instruct.templates import (
    ALPACA,
    PromptTemplate,
    TemplateError,
    language_name,
    translation_instruction,
)
from tests import instruct_case
from tests.instruct_case import build_instruction_data, write_jsonl


def test_alpaca_prompts_character_for_character():
    prompt, response = ALPACA.render("Give three tips.", "", "Eat well.")
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nGive three tips.\n\n### Response:"
    )
    assert response == "Eat well."  # appended directly after "### Response:"
    prompt, _ = ALPACA.render("Translate.", "Hallo", "Hello")
    assert prompt == (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\nHallo\n\n### Response:"
    )


def test_translation_instructions_and_language_names(tmp_path):
    assert translation_instruction("en", "zh") == "Translate the following sentences from English to Chinese."
    assert translation_instruction("en", "zh", 8) == translation_instruction("en", "zh", 0)
    assert translation_instruction("en", "zh", 1) != translation_instruction("en", "zh", 0)
    for code in ("ar", "el", "hi", "tr", "vi", "zh", "de", "fr", "es", "ru", "ja"):
        language_name(code)
    with pytest.raises(TemplateError, match="known: .*zh.*--language-name xx=Name"):
        language_name("xx")
    assert language_name("xx", {"xx": "Examplish"}) == "Examplish"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"prompt_input": "{instruction} | {input} =>", "chat_user": "U: {content}\nA:"}))
    template = PromptTemplate.from_file(str(path))
    assert template.render("Do", "x", "y") == ("Do | x =>", "y")
    assert template.render("Do", "", "y") == ("Do |  =>", "y")  # no prompt_no_input: {input} empty
    assert template.render_messages([("user", "hi"), ("assistant", "yo")]) == [("U: hi\nA:", False), ("yo", True)]
    path.write_text(json.dumps({"prompt_input": "{instruction} {oops}"}))
    with pytest.raises(TemplateError, match="prompt_input has a field other than"):
        PromptTemplate.from_file(str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory, assets):
    directory = str(tmp_path_factory.mktemp("instruct_files"))
    paths = instruct_case.make_instruction_files(directory, n=24)
    paths["messages"] = write_jsonl(os.path.join(directory, "chat.jsonl"), [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the bank"},
                      {"role": "assistant", "content": "river bank"}, {"role": "user", "content": "and?"},
                      {"role": "assistant", "content": "money"}]},
        {"messages": [{"role": "user", "content": "two trees"}, {"role": "assistant", "content": "zwei Baum"}]},
    ])
    paths["array"] = os.path.join(directory, "alpaca_array.json")
    with open(paths["array"], "w", encoding="utf-8") as handle:
        json.dump([json.loads(line) for line in open(paths["alpaca_en"], encoding="utf-8")][:5], handle)
    return paths


def _build(tmp_path, argv, tokenizer="sp", assets=None, name="out"):
    prefix = str(tmp_path / name)
    flags = (["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", assets["sp"]] if tokenizer == "sp"
             else ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", assets["hf"]])
    code = build_instruction_data.main([*argv, "--output-prefix", prefix, "--no-progress", *flags])
    return code, prefix + "_text_document"


def _records(path):
    tokens, mask = IndexedDataset(path), IndexedDataset(path + "_loss_mask")
    return [(tokens[i].astype(np.int64), np.array(mask[i])) for i in range(len(tokens))]  # copies: the files close


@pytest.mark.parametrize("tokenizer", ["sp", "hf"])
def test_mask_is_exactly_response_and_eod(tmp_path, assets, files, tokenizer):
    encoder = TextEncoder(build_tokenizer(*(("SentencePieceTokenizer", assets["sp"]) if tokenizer == "sp"
                                            else ("HuggingFaceTokenizer", assets["hf"]))))
    code, path = _build(tmp_path, ["--format", "alpaca", "--input", files["alpaca_en"], files["array"],
                                   "--lang", "en", "--seq-length", "4096"], tokenizer, assets)
    assert code == 0
    records = [json.loads(line) for line in open(files["alpaca_en"], encoding="utf-8")]
    records += json.load(open(files["array"], encoding="utf-8"))
    built = _records(path)
    assert len(built) == len(records)
    for record, (ids, mask) in zip(records, built):
        prompt, response = ALPACA.render(record["instruction"], record["input"], record["output"])
        assert set(np.unique(mask)) == {0, 1}
        target = ids[mask == 1]
        assert target[-1] == encoder.eod and ids[-1] == encoder.eod  # the model learns to stop
        assert encoder.decode(target[:-1].tolist()) == response
        assert target[:-1].tolist() == encoder.encode(response)  # tokenized on its own
        assert ids[mask == 0].tolist() == encoder.encode(prompt)
        assert not mask[: len(encoder.encode(prompt))].any() and mask[len(encoder.encode(prompt)):].all()


def test_translation_moses_and_messages_formats(tmp_path, assets, files):
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", assets["sp"]))
    pairs = [json.loads(line) for line in open(files["pairs"], encoding="utf-8")]
    code, jsonl = _build(tmp_path, ["--format", "translation", "--input", files["pairs"], "--src-lang", "en",
                                    "--tgt-lang", "de", "--seq-length", "4096"], assets=assets, name="a")
    assert code == 0
    code, moses = _build(tmp_path, ["--format", "translation", "--input", files["moses"], "--src-lang", "en",
                                    "--tgt-lang", "de", "--seq-length", "4096"], assets=assets, name="b")
    assert code == 0
    a, b = _records(jsonl), _records(moses)
    assert len(a) == len(pairs) and all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    for index, (pair, (ids, mask)) in enumerate(zip(pairs, a)):
        prompt = ALPACA.render(translation_instruction("en", "de", index), pair["src"])[0]
        assert ids[mask == 0].tolist() == encoder.encode(prompt)  # instructions rotate by pair index
        assert encoder.decode(ids[mask == 1][:-1].tolist()) == pair["tgt"]
    code, chat = _build(tmp_path, ["--format", "messages", "--input", files["messages"], "--seq-length", "4096"],
                        assets=assets, name="c")
    assert code == 0
    (ids, mask), (ids2, mask2) = _records(chat)
    runs = np.split(ids, np.flatnonzero(np.diff(mask)) + 1)
    texts = [encoder.decode(run.tolist()) for run in runs]
    assert texts[1] == "river bank" and texts[3].startswith("money")  # assistant turns are targets
    assert "the bank" in texts[0] and "and?" in texts[2]
    assert ids[-1] == encoder.eod and mask[-1] == 1 and int(mask.sum()) == len(runs[1]) + len(runs[3])


def test_same_bytes_with_any_number_of_workers(tmp_path, assets, files):
    argv = ["--recipe", "coit", "--target-lang", "de", "--instruction-data", f"en={files['alpaca_en']}",
            f"de={files['alpaca_de']}", "--translation-data", f"en-de={files['moses']}",
            "--translation-pairs", "10", "--translation-sampling", "random", "--max-samples", "alpaca-de=7",
            "--seq-length", "48", "--template", instruct_case.write_template(str(tmp_path))]
    outputs = []
    for workers in (1, 2):
        code, path = _build(tmp_path, [*argv, "--workers", str(workers)], assets=assets, name=f"w{workers}")
        assert code == 0
        outputs.append([open(path + suffix, "rb").read() for suffix in (".bin", ".idx", "_loss_mask.bin")])
    assert outputs[0] == outputs[1]


def test_recipes_and_budgets(tmp_path, assets, files, capsys):
    base = ["--instruction-data", f"en={files['alpaca_en']}", f"de={files['alpaca_de']}",
            "--translation-data", f"en-de={files['pairs']}", "--seq-length", "4096"]
    code, path = _build(tmp_path, ["--recipe", "coit", "--target-lang", "de", *base, "--translation-pairs", "5",
                                   "--max-samples", "alpaca-en=3"], assets=assets)
    assert code == 0
    assert len(_records(path)) == 3 + 24 + 5
    summary = capsys.readouterr().out
    assert "alpaca-en              3 records (en: 3)" in summary and "translation-en-de      5 records (de: 5)" in summary
    first = _records(path)[-5:]
    code, sampled = _build(tmp_path, ["--recipe", "coit", "--target-lang", "de", *base, "--translation-pairs", "5",
                                      "--translation-sampling", "random"], assets=assets, name="s")
    assert code == 0
    assert [r[0].tolist() for r in _records(sampled)[-5:]] != [r[0].tolist() for r in first]
    # recipes name what they need
    with pytest.raises(SystemExit) as exit_info:
        _build(tmp_path, ["--recipe", "muit", "--target-langs", "de", "zh", *base], assets=assets, name="m")
    assert exit_info.value.code == 2 and "missing: zh" in capsys.readouterr().err


@pytest.mark.parametrize("line,reason", [
    ('{"instruction": "x"}', "missing key: 'output'"),
    ('{"instruction": "x", "output": "  "}', "empty response"),
    ('{"instruction": "x", "output": "y"', "malformed JSON"),
    (b'{"instruction": "\xff", "output": "y"}', "invalid UTF-8"),
])
def test_bad_records_name_file_and_line_and_write_nothing(tmp_path, assets, capsys, line, reason):
    path = tmp_path / "bad.jsonl"
    good = b'{"instruction": "a", "output": "b"}\n'
    path.write_bytes(good + (line if isinstance(line, bytes) else line.encode()) + b"\n" + good)
    code, out = _build(tmp_path, ["--format", "alpaca", "--input", str(path)], assets=assets)
    assert code == 2
    assert f"{path}:2: {reason}" in capsys.readouterr().err
    assert not [f for f in os.listdir(tmp_path) if f.startswith("out")], "nothing written after a failure"
    code, out = _build(tmp_path, ["--format", "alpaca", "--input", str(path), "--skip-bad-lines"], assets=assets)
    assert code == 0 and len(_records(out)) == 2
    assert "skipped lines:    1 (" + reason.split(":")[0] in capsys.readouterr().out


def test_long_prompts_and_empty_translation_sides(tmp_path, assets, capsys):
    path = tmp_path / "long.jsonl"
    write_jsonl(str(path), [{"instruction": "word " * 200, "output": "ok"},
                            {"instruction": "short", "output": "a long answer " * 40},
                            {"instruction": "short", "output": "fine"}])
    compact = ["--template", instruct_case.write_template(str(tmp_path))]
    code, out = _build(tmp_path, ["--format", "alpaca", "--input", str(path), "--seq-length", "64", *compact],
                       assets=assets)
    assert code == 0
    records = _records(out)
    assert len(records) == 2 and len(records[0][0]) == 65 and records[0][1][0] == 0  # truncated to one row (64 + 1), counted
    assert "truncated 1, skipped: 1 too long" in capsys.readouterr().out
    code, out = _build(tmp_path, ["--format", "alpaca", "--input", str(path), "--seq-length", "64",
                                  "--long-records", "skip", *compact], assets=assets, name="skip")
    assert code == 0 and len(_records(out)) == 1
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(str(pairs), [{"src": "the bank", "tgt": ""}])
    code, _ = _build(tmp_path, ["--format", "translation", "--input", str(pairs), "--src-lang", "en",
                                "--tgt-lang", "de"], assets=assets, name="p")
    assert code == 2 and f"{pairs}:1: empty side" in capsys.readouterr().err
    code, _ = _build(tmp_path, ["--format", "translation", "--input", str(pairs), "--src-lang", "en",
                                "--tgt-lang", "qq"], assets=assets, name="q")
    assert code == 2 and "unknown language code 'qq'" in capsys.readouterr().err


def test_add_bos_begins_every_record_and_is_not_a_target(tmp_path, assets, files, capsys):
    encoder = TextEncoder(build_tokenizer("SentencePieceTokenizer", assets["sp"]))
    assert encoder.bos is not None and encoder.bos != encoder.eod
    argv = ["--format", "alpaca", "--input", files["alpaca_en"], "--lang", "en", "--seq-length", "4096"]
    plain = _records(_build(tmp_path, argv, assets=assets, name="plain")[1])
    code, path = _build(tmp_path, [*argv, "--add-bos"], assets=assets, name="bos")
    assert code == 0
    with_bos = _records(path)
    assert len(with_bos) == len(plain)
    for (ids, mask), (plain_ids, plain_mask) in zip(with_bos, plain):
        assert ids[0] == encoder.bos and mask[0] == 0
        assert ids[1:].tolist() == plain_ids.tolist() and mask[1:].tolist() == plain_mask.tolist()
    # A tokenizer without a BOS (the test byte-level BPE defines one: use a SentencePiece
    # wrapper that reports none) is refused before anything is written.
    from megatron_prealign.data import text_encoder

    original = text_encoder._special_id
    text_encoder._special_id = lambda tokenizer, name: None if name == "bos" else original(tokenizer, name)
    try:
        code, path = _build(tmp_path, [*argv, "--add-bos"], assets=assets, name="nobos")
    finally:
        text_encoder._special_id = original
    assert code == 2 and "--add-bos: the tokenizer defines no beginning-of-sequence token" in capsys.readouterr().err
    assert not os.path.exists(path + ".bin")


def test_prompts_with_add_bos(assets):
    from megatron_prealign.evaluation.common import TextToIds

    tokenizer = build_tokenizer("SentencePieceTokenizer", assets["sp"])
    plain, with_bos = TextToIds(tokenizer, 10**6), TextToIds(tokenizer, 10**6, add_bos=True)
    text = "the river bank"
    assert with_bos(text).tolist() == [with_bos.encoder.bos, *plain(text).tolist()]
    assert with_bos(text, bos=False).tolist() == plain(text).tolist()  # a continuation
    # Perplexity: every text starts with the BOS, which is given, never scored.
    from megatron_prealign.evaluation.perplexity import text_stream

    tokens, mask = text_stream(["the bank", "a tree"], with_bos, None)
    starts = [0, len(with_bos("the bank")) + 1]
    assert tokens[starts].tolist() == [with_bos.bos] * 2 and not mask[starts].any()
    assert mask.sum() == len(tokens) - 2
