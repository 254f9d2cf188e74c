"""Built-in data of the PreAlign demo: a small English grammar plus templated facts about
invented people (the paper's CLKA setup, in miniature), and CLKA questions on those facts.

* ``grammar_document``: sentences from a tiny phrase-structure grammar ("the old dog sees a red
  ball near the river."), a quarter of them the fact templates about an unnamed person ("one
  old farmer was born in kirrow."), so cities, professions and the templates are ordinary words
  of the language that the En-Clone corpus contains too: only *which person* goes with which
  city or profession is English-only knowledge; no facts about the invented people;
* ``fact_sentences``: each person's two facts (birth city, profession) in several English
  templates; the demo teaches them in English only;
* ``clka_items``: per fact, the canonical statement and three distractors with the object entity
  (city / profession) replaced by another of its kind (the paper's protocol).

The language is lower case (the alignment table stores lower-case words, and every word of
this language, names and cities included, should be one table entry). Everything is drawn from
``random.Random(seed)``: the same seed gives the same files.
"""

from __future__ import annotations

import random
from typing import Dict, List

DETERMINERS = ["the", "a", "every", "one"]
ADJECTIVES = ["old", "young", "small", "big", "red", "green", "happy", "quiet", "dark", "bright"]
NOUNS = ["dog", "cat", "bird", "child", "farmer", "ball", "tree", "house", "river", "garden",
         "book", "horse", "boat", "window", "road", "friend"]
VERBS = ["sees", "finds", "likes", "follows", "carries", "watches", "paints", "helps"]
PREPOSITIONS = ["near", "under", "behind", "with", "beside", "over"]
ADVERBS = ["slowly", "often", "today", "again", "quietly", "never"]

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gr", "tr"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["n", "l", "r", "s", "th", "k", "m"]
CITIES = ["parvel", "osmund", "kirrow", "talmere", "vessik", "dunhal", "brisco", "lenmark",
          "quorra", "ashvale", "merrin", "tolbec"]
PROFESSIONS = ["baker", "doctor", "pilot", "tailor", "sailor", "singer", "builder", "lawyer",
               "painter", "teacher", "miner", "driver"]

FACT_TEMPLATES = {
    "city": ["{name} was born in {city}.", "the birthplace of {name} is {city}.",
             "{name} comes from {city}.", "in {city} {name} was born."],
    "job": ["{name} works as a {job}.", "the job of {name} is {job}.",
            "{name} is a {job} by trade.", "every day {name} works as a {job}."],
}
CANONICAL = {"city": "{name} was born in {city}.", "job": "{name} works as a {job}."}


def invented_names(rng: random.Random, n: int) -> List[str]:
    names = set()
    while len(names) < n:
        syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)]
        name = "".join(syllables) + rng.choice(_CODAS)
        names.add(name)
    return sorted(names)


def make_people(seed: int, n: int) -> List[Dict[str, str]]:
    rng = random.Random(seed)
    return [{"name": name, "city": rng.choice(CITIES), "job": rng.choice(PROFESSIONS)}
            for name in invented_names(rng, n)]


def _noun_phrase(rng: random.Random) -> str:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return " ".join(words)


PERSON_NOUNS = ["farmer", "child", "friend"]
GENERIC_RELATION_SHARE = 0.25  # of grammar sentences


def generic_relation_sentence(rng: random.Random) -> str:
    """A fact template about an unnamed person ("the old farmer was born in kirrow."): cities,
    professions and the templates are ordinary words of the language, in every language."""
    relation = rng.choice(("city", "job"))
    subject = f"{rng.choice(DETERMINERS)} {rng.choice(ADJECTIVES)} {rng.choice(PERSON_NOUNS)}"
    return rng.choice(FACT_TEMPLATES[relation]).format(
        name=subject, city=rng.choice(CITIES), job=rng.choice(PROFESSIONS))


def grammar_sentence(rng: random.Random) -> str:
    if rng.random() < GENERIC_RELATION_SHARE:
        return generic_relation_sentence(rng)
    words = [_noun_phrase(rng)]
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    words += [rng.choice(VERBS), _noun_phrase(rng)]
    if rng.random() < 0.5:
        words += [rng.choice(PREPOSITIONS), _noun_phrase(rng)]
    return " ".join(words) + "."


def grammar_document(rng: random.Random, sentences: int) -> str:
    return " ".join(grammar_sentence(rng) for _ in range(sentences))


def fact_sentences(person: Dict[str, str], rng: random.Random) -> List[str]:
    return [rng.choice(FACT_TEMPLATES[relation]).format(**person) for relation in ("city", "job")]


def english_document(rng: random.Random, people: List[Dict[str, str]], sentences: int,
                     fact_share: float) -> str:
    """Grammar sentences with facts about random people mixed in (share ``fact_share``)."""
    out = []
    for _ in range(sentences):
        if rng.random() < fact_share:
            out.append(rng.choice(fact_sentences(rng.choice(people), rng)))
        else:
            out.append(grammar_sentence(rng))
    return " ".join(out)


def clka_items(people: List[Dict[str, str]], seed: int, distractors: int = 3) -> List[dict]:
    rng = random.Random(seed)
    items = []
    for person in people:
        for relation, pool in (("city", CITIES), ("job", PROFESSIONS)):
            others = rng.sample([v for v in pool if v != person[relation]], distractors)
            template = CANONICAL[relation]
            items.append({
                "true": template.format(**person),
                "distractors": [template.format(**{**person, relation: o}) for o in others],
                "relation": relation,
            })
    return items
