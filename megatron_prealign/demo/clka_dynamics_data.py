"""Data of the CLKA learning-dynamics analysis (PreAlign Figure 4), in miniature.

Training is cut into periods; in every period new facts about invented people are taught, each
at one of several frequencies (the number of training documents of the period that state it),
half of them in English and half in En-Clone. Right after the period the checkpoint is asked
about them in both languages (``evaluation/clka_dynamics.py``).

* ``DynamicsSpec``: periods, frequencies, facts per (period, frequency, language); validated;
* ``make_facts``: one fact (birth city or profession) per invented person, every person new;
  the names are ordinary words of both languages (``name_sentence`` mentions them without a
  fact in the warm-up text), only the fact is knowledge of one language (as the cities of
  ``demo.data``);
* ``period_documents``: one period's documents of one language: each of its facts stated in
  exactly ``frequency`` documents (a random template between grammar sentences) + background;
  the En-Clone documents are English text here and shifted into the clone ids by
  ``tools/make_enclone.py``;
* ``fact_items``: the CLKA question per fact (canonical statement vs three distractors with
  another city / profession), with its period, frequency and training language.

Everything is drawn from ``random.Random(seed)``: the same seed gives the same files.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Sequence, Tuple

from megatron_prealign.demo import data as demo_data
from megatron_prealign.errors import ConfigError

LANGUAGES = ("en", "enclone")


@dataclasses.dataclass(frozen=True)
class DynamicsSpec:
    periods: int = 4
    frequencies: Tuple[int, ...] = (1, 4, 16, 32)
    facts_per_cell: int = 8  # facts per period, frequency and training language

    def validate(self) -> "DynamicsSpec":
        if self.periods < 1:
            raise ConfigError(f"periods must be >= 1 (got {self.periods})")
        freqs = list(self.frequencies)
        if not freqs or any(not isinstance(f, int) or f < 1 for f in freqs):
            raise ConfigError(f"frequencies must be positive integers (got {freqs})")
        if sorted(set(freqs)) != freqs:
            raise ConfigError(f"frequencies must be distinct and increasing (got {freqs})")
        if self.facts_per_cell < 1:
            raise ConfigError(f"facts_per_cell must be >= 1 (got {self.facts_per_cell})")
        return self

    @property
    def facts(self) -> int:
        return self.periods * len(self.frequencies) * len(LANGUAGES) * self.facts_per_cell


def make_facts(spec: DynamicsSpec, seed: int) -> List[Dict]:
    """Every (period, frequency, training language) cell gets ``facts_per_cell`` facts, each
    about a person of its own; relations alternate so both kinds occur in every cell."""
    spec.validate()
    rng = random.Random(seed)
    names = demo_data.invented_names(rng, spec.facts)
    rng.shuffle(names)
    facts, index = [], 0
    for period in range(1, spec.periods + 1):
        for frequency in spec.frequencies:
            for language in LANGUAGES:
                for k in range(spec.facts_per_cell):
                    relation = ("city", "job")[(k + index) % 2]
                    pool = demo_data.CITIES if relation == "city" else demo_data.PROFESSIONS
                    facts.append({"name": names[len(facts)], "relation": relation, "object": rng.choice(pool),
                                  "period": period, "frequency": frequency, "train_language": language})
                index += 1
    return facts


def fact_sentence(fact: Dict, rng: random.Random) -> str:
    template = rng.choice(demo_data.FACT_TEMPLATES[fact["relation"]])
    return template.format(name=fact["name"], **{fact["relation"]: fact["object"]})


def name_sentence(name: str, rng: random.Random) -> str:
    """The name as an ordinary word, without a fact ("kavon sees the old dog.")."""
    return f"{name} {rng.choice(demo_data.VERBS)} {demo_data._noun_phrase(rng)}."


def fact_document(fact: Dict, rng: random.Random, context_sentences: int = 2) -> str:
    before = rng.randint(0, context_sentences)
    sentences = [demo_data.grammar_sentence(rng) for _ in range(context_sentences)]
    sentences.insert(before, fact_sentence(fact, rng))
    return " ".join(sentences)


def period_documents(facts: Sequence[Dict], period: int, language: str, background_docs: int,
                     sentences_per_doc: int, rng: random.Random) -> List[str]:
    """The documents of one period in one language (shuffled): every fact of that period and
    language in exactly ``frequency`` documents, plus ``background_docs`` fact-free ones."""
    docs = [fact_document(fact, rng) for fact in facts
            if fact["period"] == period and fact["train_language"] == language
            for _ in range(fact["frequency"])]
    docs += [demo_data.grammar_document(rng, sentences_per_doc) for _ in range(background_docs)]
    rng.shuffle(docs)
    return docs


def warmup_documents(names: Sequence[str], docs: int, sentences_per_doc: int, mentions: int,
                     rng: random.Random) -> List[str]:
    """Fact-free documents in which every name occurs ``mentions`` times (so the names are
    words of the language: in the tokenizer's data, the alignment table and, cloned, En-Clone)."""
    out = [demo_data.grammar_document(rng, sentences_per_doc) for _ in range(docs)]
    for name in names:
        for _ in range(mentions):
            k = rng.randrange(len(out))
            out[k] = out[k] + " " + name_sentence(name, rng)
    return out


def fact_items(facts: Sequence[Dict], seed: int, distractors: int = 3) -> List[Dict]:
    rng = random.Random(seed)
    items = []
    for fact in facts:
        pool = demo_data.CITIES if fact["relation"] == "city" else demo_data.PROFESSIONS
        template = demo_data.CANONICAL[fact["relation"]]
        statement = lambda value: template.format(name=fact["name"], **{fact["relation"]: value})  # noqa: E731
        others = rng.sample([v for v in pool if v != fact["object"]], distractors)
        items.append({"true": statement(fact["object"]), "distractors": [statement(o) for o in others],
                      "period": fact["period"], "frequency": fact["frequency"],
                      "train_language": fact["train_language"], "relation": fact["relation"],
                      "name": fact["name"]})
    return items
