"""Small generated instruction data for the instruction-tuning tests and bench: Alpaca-format
records in English and German, English->German translation pairs (word by word through the
synthetic dictionary, JSON lines and a Moses pair), built with the real tool."""

import json
import os
import random

from megatron_prealign.data.synthetic import ENGLISH, GERMAN, make_assets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import build_instruction_data

TASKS = ("Repeat the following text.", "Write the text again.", "Copy this sentence.")


def _sentence(rng, words, low=3, high=9):
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


def _german(sentence):
    return " ".join(GERMAN.get(word, [word])[0] for word in sentence.split())


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def make_instruction_files(directory, n=60, seed=0, long_every=0):
    """alpaca_en / alpaca_de (JSON lines), en-de pairs as JSON lines and as a Moses pair.
    Every `long_every`-th English record gets a long response (x-LLM-like length spread)."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    german_words = [forms[0] for forms in GERMAN.values()]
    en, de, pairs = [], [], []
    for i in range(n):
        text = _sentence(rng, ENGLISH)
        output = text if not (long_every and i % long_every == 0) else " ".join([text] * 6)
        en.append({"instruction": TASKS[i % 3], "input": text if i % 4 else "", "output": output})
        de_text = _sentence(rng, german_words)
        de.append({"instruction": "Wiederhole den Text.", "input": de_text, "output": de_text, "lang": "de"})
        src = _sentence(rng, ENGLISH)
        pairs.append({"src": src, "tgt": _german(src)})
    paths = {
        "alpaca_en": write_jsonl(os.path.join(directory, "alpaca_en.jsonl"), en),
        "alpaca_de": write_jsonl(os.path.join(directory, "alpaca_de.jsonl"), de),
        "pairs": write_jsonl(os.path.join(directory, "pairs.en-de.jsonl"), pairs),
    }
    moses = os.path.join(directory, "moses.en-de")
    for lang, key in (("en", "src"), ("de", "tgt")):
        with open(f"{moses}.{lang}", "w", encoding="utf-8") as handle:
            handle.writelines(p[key] + "\n" for p in pairs)
    paths["moses"] = moses
    return paths


# A compact prompt: the test tokenizer (600 pieces, trained on the synthetic corpus) spells the
# Alpaca preamble out in ~100 tokens, too long for tiny test sequences.
COMPACT_TEMPLATE = {"prompt_input": "Q: {instruction}\n{input}\nA:", "prompt_no_input": "Q: {instruction}\nA:"}


def write_template(directory):
    path = os.path.join(directory, "template.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(COMPACT_TEMPLATE, handle)
    return path


def tokenizer_flags(sp_model):
    return ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", sp_model]


def build_coit(directory, files, sp_model, seq_length=96, extra=()):
    """The CoIT recipe (target German) over the generated files; returns the dataset prefix."""
    prefix = os.path.join(directory, "coit_de")
    argv = ["--recipe", "coit", "--template", write_template(directory), "--target-lang", "de",
            "--instruction-data", f"en={files['alpaca_en']}", f"de={files['alpaca_de']}",
            "--translation-data", f"en-de={files['pairs']}",
            "--output-prefix", prefix, "--seq-length", str(seq_length), "--no-progress",
            *tokenizer_flags(sp_model), *extra]
    assert build_instruction_data.main(argv) == 0
    return prefix + "_text_document"


def prepare(directory, n=60, seq_length=96):
    """Assets + instruction files + the CoIT dataset, cached in `directory`."""
    done = os.path.join(directory, "instruct.json")
    if os.path.exists(done):
        return json.load(open(done))
    assets = make_assets(os.path.join(directory, "assets"))
    files = make_instruction_files(os.path.join(directory, "files"), n=n)
    paths = {**assets, **files, "coit": build_coit(directory, files, assets["sp"], seq_length)}
    json.dump(paths, open(done, "w"))
    return paths
