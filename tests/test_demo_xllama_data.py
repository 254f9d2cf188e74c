"""The x-LLaMA miniature's synthetic data: deterministic from the seed, exact translations
(Clonish word by word in English order, Tolvish reordered), facts of held-out people absent from
every training source, a closed vocabulary covered by the dictionaries."""

import filecmp
import json
import random

from megatron_prealign.demo import data as demo_data
from megatron_prealign.demo import xllama_data as xd

SMALL = dict(people=12, held_out_people=4, english_instructions=200, target_instructions=100,
             translation_pool=300, translation_test=30, target_docs=10)


def _rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_deterministic_from_seed(tmp_path):
    first = xd.write_corpus(xd.XllamaDataConfig(seed=5, **SMALL), str(tmp_path / "a"))
    second = xd.write_corpus(xd.XllamaDataConfig(seed=5, **SMALL), str(tmp_path / "b"))
    other = xd.write_corpus(xd.XllamaDataConfig(seed=6, **SMALL), str(tmp_path / "c"))
    assert set(first) == set(second)
    for name in first:
        assert filecmp.cmp(first[name], second[name], shallow=False), name
    assert not filecmp.cmp(first["translation_qab"], other["translation_qab"], shallow=False)


def test_languages_are_exact_translations():
    languages = xd.make_languages(3)
    clonish, tolvish = languages["qaa"], languages["qab"]
    vocabularies = [set(clonish.lexicon.values()), set(tolvish.lexicon.values()), set(clonish.lexicon)]
    assert all(len(v) == len(clonish.lexicon) for v in vocabularies)  # one for one
    assert not (vocabularies[0] & vocabularies[1]) and not (vocabularies[0] & vocabularies[2])
    rng = random.Random(0)
    reordered = 0
    for _ in range(300):
        clause = xd.random_clause(rng)
        english = xd.render(clause, xd.ENGLISH).rstrip(".").split()
        target = xd.render(clause, clonish).rstrip(".").split()
        assert target == [clonish.lexicon.get(w, w) for w in english]  # word by word, English order
        words = xd.render(clause, tolvish).rstrip(".").split()
        assert sorted(words) == sorted(tolvish.lexicon.get(w, w) for w in english)  # same words...
        reordered += words != [tolvish.lexicon.get(w, w) for w in english]  # ...another order
        if clause["kind"] == "grammar":
            assert words[-1] == tolvish.lexicon[clause["verb"]]  # verb-final
    assert reordered > 250


def test_english_rendering_is_the_demo_grammar():
    """Same word classes and sentence shapes as the PreAlign demo's English."""
    rng = random.Random(1)
    vocabulary = set(xd._english_vocabulary()) | set(demo_data.CITIES)
    for _ in range(200):
        sentence = xd.render(xd.random_clause(rng), xd.ENGLISH)
        assert sentence.endswith(".") and set(sentence.rstrip(".").split()) <= vocabulary


def test_held_out_facts_only_in_the_qa_test(tmp_path):
    paths = xd.write_corpus(xd.XllamaDataConfig(seed=2, **SMALL), str(tmp_path))
    people = demo_data.make_people(2, SMALL["people"])
    train, test = xd.split_people(people, SMALL["held_out_people"])
    test_names = {p["name"] for p in test}
    training_text = []
    for name in ("instructions_en", "instructions_qaa", "instructions_qab", "translation_qaa",
                 "translation_qab", "docs_qaa", "docs_qab"):
        training_text += [" ".join(str(v) for v in row.values()) for row in _rows(paths[name])]
    words = {w.strip(".?") for text in training_text for w in text.split()}
    assert not (words & test_names)
    assert words & {p["name"] for p in train}  # the instruction data does ask about the others
    for code in ("qaa", "qab", "en"):
        items = _rows(paths[f"qa_{code}"])
        assert len(items) == 2 * len(test) and {i["name"] for i in items} == test_names
        for item in items:
            assert item["answer"] in item["output"].split() or item["answer"] + "." in item["output"].split()
    # Facts in instruction outputs are the people's true facts.
    truth = {p["name"]: p for p in people}
    for row in _rows(paths["instructions_en"]):
        first = row["output"].split()[0]
        if row["instruction"].startswith("where was"):
            assert row["output"] == f"{first} was born in {truth[first]['city']}."
    # Test translation pairs are not in the training pool.
    pool = {row["src"] for row in _rows(paths["translation_qab"])}
    assert not pool & {row["src"] for row in _rows(paths["translation_test_qab"])}


def test_dictionaries_cover_the_target_texts(tmp_path):
    paths = xd.write_corpus(xd.XllamaDataConfig(seed=4, **SMALL), str(tmp_path))
    names = {p["name"] for p in demo_data.make_people(4, SMALL["people"])} | set(demo_data.CITIES)
    for code in ("qaa", "qab"):
        with open(paths[f"dictionary_{code}"], encoding="utf-8") as handle:
            pairs = dict(line.split() for line in handle)
        target_words = set(pairs.values())
        for name in (f"instructions_{code}", f"translation_{code}", f"docs_{code}", f"qa_{code}"):
            for row in _rows(paths[name]):
                text = " ".join(row[k] for k in ("instruction", "input", "output", "tgt", "text") if k in row)
                assert {w.strip(".?") for w in text.split()} <= target_words | names, (name, text)


def test_people_with_fewer_attribute_values(tmp_path):
    # The full configuration's people draw from the first 6 cities / professions (QA chance 1/6).
    people = xd.make_people(4, 150, values=6)
    assert len({p["name"] for p in people}) == 150
    assert {p["city"] for p in people} == set(demo_data.CITIES[:6])
    assert {p["job"] for p in people} == set(demo_data.PROFESSIONS[:6])
    assert xd.make_people(4, 150, values=6) == people and xd.make_people(4, 20) == demo_data.make_people(4, 20)
    paths = xd.write_corpus(xd.XllamaDataConfig(seed=4, attribute_values=3, **SMALL), str(tmp_path))
    answers = {row["answer"] for row in _rows(paths["qa_en"])}
    assert answers <= set(demo_data.CITIES[:3] + demo_data.PROFESSIONS[:3])
