"""A small generated English / German / Chinese corpus with dictionaries, for tests, benchmarks
and the CPU demo (nothing is downloaded).

English text is drawn from a fixed word list with Zipf-like frequencies, with capitalised
sentence starts, punctuation, numbers, hyphenated and parenthesised words, so codeswitching meets
the cases it must handle. German and Chinese "translations" are fixed per word, and monolingual
German / Chinese documents use them, so a tokenizer trained on the mix knows both scripts.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from typing import Dict, List, Sequence, Tuple

from megatron_prealign.data.tokenizer_training import train_byte_level_bpe, train_sentencepiece

ENGLISH = (
    "the of and to in is was for that with as on by at from his her they we you it be are "
    "have had not but this which or one all their there been were when who will more no if "
    "out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also "
    "bank river money water house tree city people world school family country water light "
    "night music market garden window bridge mountain village winter summer morning letter"
).split()

GERMAN = {
    "the": ["der", "die", "das"], "of": ["von"], "and": ["und"], "to": ["zu", "nach"],
    "in": ["im"], "is": ["ist"], "was": ["war"], "for": ["für"], "that": ["dass"],
    "with": ["mit"], "on": ["auf"], "by": ["durch"], "from": ["aus"], "they": ["sie"],
    "we": ["wir"], "you": ["du", "ihr"], "not": ["nicht"], "but": ["aber"], "one": ["eins"],
    "all": ["alle"], "when": ["wenn", "als"], "who": ["wer"], "more": ["mehr"], "no": ["nein"],
    "if": ["falls"], "said": ["sagte"], "what": ["was"], "about": ["über"], "new": ["neu"],
    "time": ["Zeit"], "two": ["zwei"], "first": ["erste"], "man": ["Mann"], "made": ["gemacht"],
    "bank": ["Bank", "Ufer"], "river": ["Fluss"], "money": ["Geld"], "water": ["Wasser"],
    "house": ["Haus"], "tree": ["Baum"], "city": ["Stadt"], "people": ["Leute", "Menschen"],
    "world": ["Welt"], "school": ["Schule"], "family": ["Familie"], "country": ["Land"],
    "light": ["Licht"], "night": ["Nacht"], "music": ["Musik"], "market": ["Markt"],
    "garden": ["Garten"], "window": ["Fenster"], "bridge": ["Brücke"], "mountain": ["Berg"],
    "village": ["Dorf"], "winter": ["Winterzeit"], "summer": ["Sommer"], "morning": ["Morgen"],
    "letter": ["Brief"],
}

CHINESE = {
    "bank": ["银行", "岸"], "river": ["河"], "money": ["钱", "金钱"], "water": ["水"],
    "house": ["房子"], "tree": ["树"], "city": ["城市"], "people": ["人们"], "world": ["世界"],
    "school": ["学校"], "family": ["家庭"], "country": ["国家"], "light": ["光"],
    "night": ["夜"], "music": ["音乐"], "market": ["市场"], "garden": ["花园"],
    "window": ["窗户"], "bridge": ["桥"], "mountain": ["山"], "village": ["村庄"],
    "time": ["时间"], "man": ["男人"], "new": ["新"], "two": ["二"], "first": ["第一"],
}


def _zipf_weights(n: int) -> List[float]:
    return [1.0 / (rank + 1) ** 0.8 for rank in range(n)]


def english_document(rng: random.Random, n_sentences: int) -> str:
    weights = _zipf_weights(len(ENGLISH))
    sentences = []
    for _ in range(n_sentences):
        words = rng.choices(ENGLISH, weights, k=rng.randint(5, 16))
        r = rng.random()
        if r < 0.1:
            words[rng.randrange(len(words))] += "-" + rng.choice(ENGLISH)
        elif r < 0.2:
            i = rng.randrange(len(words))
            words[i] = f"({words[i]})"
        elif r < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(1, 2000)))
        elif r < 0.35:
            words[rng.randrange(len(words))] = rng.choice(ENGLISH).upper()
        words[0] = words[0][:1].upper() + words[0][1:]
        sentence = " ".join(words)
        sentence += rng.choice([".", ".", ".", "!", "?", ", and so on."])
        sentences.append(sentence)
    # Paragraph breaks now and then.
    text = ""
    for i, sentence in enumerate(sentences):
        text += ("" if i == 0 else ("\n" if rng.random() < 0.15 else " ")) + sentence
    return text


def german_document(rng: random.Random, n_sentences: int) -> str:
    forms = [f for fs in GERMAN.values() for f in fs]
    return " ".join(
        " ".join(rng.choices(forms, k=rng.randint(5, 12))).capitalize() + "." for _ in range(n_sentences)
    )


def chinese_document(rng: random.Random, n_sentences: int) -> str:
    forms = [f for fs in CHINESE.values() for f in fs]
    return "".join("".join(rng.choices(forms, k=rng.randint(4, 10))) + "。" for _ in range(n_sentences))


def write_jsonl(path: str, texts: Sequence[str], key: str = "text") -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({key: text}, ensure_ascii=False) + "\n")
    return path


def make_corpus(
    directory: str, n_english: int = 200, n_other: int = 60, seed: int = 0, sentences: int = 6
) -> Dict[str, str]:
    """Write en.jsonl, de.jsonl, zh.jsonl and dictionaries en-de.txt (MUSE, tab/space mixed)
    and en-zh.jsonl (the paper's ``words`` form); returns their paths by name."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    paths = {
        "en": write_jsonl(
            os.path.join(directory, "en.jsonl"),
            [english_document(rng, sentences) for _ in range(n_english)],
        ),
        "de": write_jsonl(
            os.path.join(directory, "de.jsonl"), [german_document(rng, 4) for _ in range(n_other)]
        ),
        "zh": write_jsonl(
            os.path.join(directory, "zh.jsonl"), [chinese_document(rng, 4) for _ in range(n_other)]
        ),
    }
    muse = os.path.join(directory, "en-de.txt")
    with open(muse, "w", encoding="utf-8") as handle:
        for i, (word, forms) in enumerate(GERMAN.items()):
            sep = "\t" if i % 2 else " "
            for form in forms:
                handle.write(f"{word}{sep}{form}\n")
    paths["dict_de"] = muse
    zh = os.path.join(directory, "en-zh.jsonl")
    with open(zh, "w", encoding="utf-8") as handle:
        for word, forms in CHINESE.items():
            handle.write(json.dumps({"words": " $ ".join([word] + forms)}, ensure_ascii=False) + "\n")
    paths["dict_zh"] = zh
    return paths


def corpus_sentences(paths: Sequence[str], key: str = "text") -> List[str]:
    """All lines of text of JSON-lines files (for training test tokenizers)."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                out.extend(s for s in json.loads(line)[key].split("\n") if s.strip())
    return out


def make_tokenizers(directory: str, paths: Dict[str, str]) -> Tuple[str, str]:
    """Train a SentencePiece BPE (byte fallback) and a byte-level BPE on the corpus; returns
    (path of the .model, HF tokenizer directory)."""
    sentences = corpus_sentences([paths["en"], paths["de"], paths["zh"]])
    sp = train_sentencepiece(
        sentences, os.path.join(directory, "spm"), vocab_size=600, hard_vocab_limit=False
    )
    hf = train_byte_level_bpe(sentences, os.path.join(directory, "bbpe"), vocab_size=700)
    return sp, hf


def make_assets(directory: str) -> Dict[str, str]:
    """Corpus, both tokenizers and an alignment table (de + zh) in ``directory``; reuses what
    an earlier call left there (tests share one set per session)."""
    done = os.path.join(directory, "assets.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as handle:
            return json.load(handle)
    # the table tools (nltk): only when assets are made, not for the word lists (ENGLISH, ...)
    from megatron_prealign.data.alignment_table import write_table
    from megatron_prealign.data.dictionaries import read_dictionary
    from megatron_prealign.data.table_builder import build_entries, select_frequent
    from megatron_prealign.data.words import count_words

    paths = make_corpus(directory)
    paths["sp"], paths["hf"] = make_tokenizers(directory, paths)
    counts: Counter = Counter()
    with open(paths["en"], encoding="utf-8") as handle:
        for line in handle:
            counts.update(count_words(json.loads(line)["text"]))
    dictionaries = {"de": read_dictionary(paths["dict_de"]), "zh": read_dictionary(paths["dict_zh"])}
    entries = build_entries(select_frequent(counts, 3, None), counts, dictionaries)
    paths["table"] = os.path.join(directory, "table.jsonl")
    write_table(paths["table"], entries)
    with open(done, "w", encoding="utf-8") as handle:
        json.dump(paths, handle)
    return paths


if __name__ == "__main__":
    # `python -m megatron_prealign.data.synthetic DIR`: the built-in corpus and dictionaries
    # (en/de/zh JSON lines, en-de MUSE file, en-zh paper-format file) for examples and demos.
    for name, path in make_corpus(sys.argv[1] if len(sys.argv) > 1 else "synthetic_data").items():
        print(f"{name}\t{path}")
