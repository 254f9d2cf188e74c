"""Built-in data of the x-LLaMA miniature: two synthetic target languages of different difficulty
over the demo's English grammar and invented facts, and the instruction data built on them.

Languages (codes from ISO 639's private-use range, so they never clash with real ones):

* ``qaa`` "Clonish", En-Clone-like: every English word replaced one for one by an invented
  word, English word order; translation is word by word;
* ``qab`` "Tolvish": its own (differently shaped) vocabulary and its own word order: adverb
  first, subject - object - verb, nouns before their adjectives and determiners, postpositions
  placed before the object, and reordered fact and question templates.

Names of people and cities are shared by all languages (named entities); professions and every
other word are translated. Every sentence is generated once as a structure and rendered in each
language, so English and target sentences are exact translations.

Data (Alpaca records ``{"instruction", "input", "output", "lang"}``, translation pairs
``{"src", "tgt"}``):

* ``instruction_records``: general instructions about the invented facts and the grammar
  (fact questions about the *training* people, sentence writing, repetition), in any language;
* ``translation_pairs``: English -> target pairs of fact-free sentences (grammar sentences and
  facts about unnamed people), so facts about the invented people stay English-only knowledge;
* ``qa_items``: the facts of the *held-out* people asked in a target language (closed book:
  the facts are taught only in English pretraining), with the gold answer word in that language;
* ``documents``: plain pretraining text per language; ``dictionary``: English -> target word
  pairs (the alignment table of PreAlign).

Everything comes from ``random.Random`` seeded by the caller: the same seed gives the same data.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from megatron_prealign.demo import data as demo_data

# Fact templates, index-aligned across languages (template i of one language translates template
# i of another). Tolvish's are English glosses in Tolvish word order; the lexicon maps the words.
ENGLISH_FACTS = demo_data.FACT_TEMPLATES
TOLVISH_FACTS = {
    "city": ["{name} {city} in born was.", "{name} of birthplace the {city} is.",
             "{name} {city} from comes.", "{city} in {name} born was."],
    "job": ["{name} {job} a as works.", "{name} of job the {job} is.",
            "{name} trade by {job} a is.", "day every {name} {job} a as works."],
}
# Instruction templates (English, and Tolvish glosses): fact questions, sentence tasks.
ENGLISH_TASKS = {
    "ask_city": "where was {name} born?",
    "ask_job": "what is the job of {name}?",
    "write_about": "write a sentence about a {noun}.",
    "repeat": "repeat the following sentence.",
}
TOLVISH_TASKS = {
    "ask_city": "{name} where born was?",
    "ask_job": "{name} of job the what is?",
    "write_about": "{noun} a about sentence a write.",
    "repeat": "following the sentence repeat.",
}
_TEMPLATE_WORDS = sorted({w.strip(".?") for text in [*sum(ENGLISH_FACTS.values(), []), *ENGLISH_TASKS.values()]
                          for w in text.split() if "{" not in w})


def _english_vocabulary() -> List[str]:
    words = (demo_data.DETERMINERS + demo_data.ADJECTIVES + demo_data.NOUNS + demo_data.VERBS
             + demo_data.PREPOSITIONS + demo_data.ADVERBS + demo_data.PROFESSIONS + _TEMPLATE_WORDS)
    return sorted(set(words))


@dataclass
class Language:
    code: str
    name: str
    lexicon: Dict[str, str]          # English word -> word of this language
    reorder: bool                    # Tolvish word order (else English order)
    facts: Dict[str, List[str]] = field(default_factory=dict)
    tasks: Dict[str, str] = field(default_factory=dict)

    def words(self, gloss: str) -> str:
        """Map an English-word gloss (already in this language's order) word by word; names,
        cities and unknown tokens stay as they are; trailing punctuation is kept."""
        out = []
        for token in gloss.split():
            core = token.rstrip(".?")
            out.append(self.lexicon.get(core, core) + token[len(core):])
        return " ".join(out)


ENGLISH = Language("en", "English", {}, reorder=False, facts=ENGLISH_FACTS, tasks=ENGLISH_TASKS)


def _invented_words(rng: random.Random, count: int, onsets, vowels, endings, syllables, reserved) -> List[str]:
    words: List[str] = []
    taken = set(reserved)
    while len(words) < count:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.choice(syllables)))
        word += rng.choice(endings)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def make_languages(seed: int, reserved: Sequence[str] = ()) -> Dict[str, Language]:
    """Clonish and Tolvish; ``reserved``: words they must not produce (names, cities)."""
    rng = random.Random(f"xllama-languages-{seed}")
    english = _english_vocabulary()
    reserved = set(reserved) | set(english) | set(demo_data.CITIES)
    clonish_words = _invented_words(rng, len(english), ["k", "m", "p", "s", "t", "l", "n", "d"],
                                    ["a", "e", "i", "o"], ["", "i"], (2,), reserved)
    reserved |= set(clonish_words)
    tolvish_words = _invented_words(rng, len(english), ["h", "sk", "y", "w", "j", "g", "x", "q", "v"],
                                    ["ae", "ou", "y", "u"], ["", "sh", "x"], (1, 2), reserved)
    clonish_tasks = dict(ENGLISH_TASKS)
    return {
        "qaa": Language("qaa", "Clonish", dict(zip(english, clonish_words)), reorder=False,
                        facts=ENGLISH_FACTS, tasks=clonish_tasks),
        "qab": Language("qab", "Tolvish", dict(zip(english, tolvish_words)), reorder=True,
                        facts=TOLVISH_FACTS, tasks=TOLVISH_TASKS),
    }


# ---------------------------------------------------------------------------------------------
# Sentences as structures, rendered per language
# ---------------------------------------------------------------------------------------------


def _noun_phrase(rng: random.Random) -> dict:
    return {"det": rng.choice(demo_data.DETERMINERS),
            "adj": rng.choice(demo_data.ADJECTIVES) if rng.random() < 0.6 else None,
            "noun": rng.choice(demo_data.NOUNS)}


def random_clause(rng: random.Random, generic_fact_share: float = demo_data.GENERIC_RELATION_SHARE) -> dict:
    """A grammar sentence, or (share ``generic_fact_share``) a fact about an unnamed person."""
    if rng.random() < generic_fact_share:
        relation = rng.choice(("city", "job"))
        subject = {"det": rng.choice(demo_data.DETERMINERS), "adj": rng.choice(demo_data.ADJECTIVES),
                   "noun": rng.choice(demo_data.PERSON_NOUNS)}
        return fact_clause(subject, relation, rng.choice(demo_data.CITIES if relation == "city"
                                                         else demo_data.PROFESSIONS),
                           rng.randrange(len(ENGLISH_FACTS[relation])))
    clause = {"kind": "grammar", "subject": _noun_phrase(rng),
              "adverb": rng.choice(demo_data.ADVERBS) if rng.random() < 0.3 else None,
              "verb": rng.choice(demo_data.VERBS), "object": _noun_phrase(rng), "pp": None}
    if rng.random() < 0.5:
        clause["pp"] = {"prep": rng.choice(demo_data.PREPOSITIONS), "np": _noun_phrase(rng)}
    return clause


def fact_clause(subject, relation: str, value: str, template: int) -> dict:
    """``subject``: a person's name (str) or an unnamed-person noun phrase (dict)."""
    return {"kind": "fact", "subject": subject, "relation": relation, "value": value, "template": template}


def _np_gloss(np_: dict, reorder: bool) -> List[str]:
    parts = [np_["det"], np_["adj"], np_["noun"]] if not reorder else [np_["noun"], np_["adj"], np_["det"]]
    return [p for p in parts if p]


def render(clause: dict, language: Language) -> str:
    """The clause as a sentence of ``language`` (English: exactly the demo grammar's format)."""
    reorder = language.reorder
    if clause["kind"] == "fact":
        subject = clause["subject"]
        name = subject if isinstance(subject, str) else " ".join(_np_gloss(subject, reorder))
        template = language.facts[clause["relation"]][clause["template"]]
        gloss = template.format(name=name, city=clause["value"], job=clause["value"])
        return language.words(gloss)
    subject, obj = _np_gloss(clause["subject"], reorder), _np_gloss(clause["object"], reorder)
    adverb = [clause["adverb"]] if clause["adverb"] else []
    pp = []
    if clause["pp"]:
        np_ = _np_gloss(clause["pp"]["np"], reorder)
        pp = np_ + [clause["pp"]["prep"]] if reorder else [clause["pp"]["prep"]] + np_
    if reorder:  # adverb first, subject, postpositional phrase, object, verb
        gloss = adverb + subject + pp + obj + [clause["verb"]]
    else:
        gloss = subject + adverb + [clause["verb"]] + obj + pp
    return language.words(" ".join(gloss) + ".")


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------


def make_people(seed: int, n: int, values: Optional[int] = None) -> List[Dict[str, str]]:
    """The demo's invented people; ``values``: draw each person's city and profession from the
    first ``values`` of each list only (fewer facts to tell apart: the full configuration's base
    learns them; the QA chance level is 1 / values). ``None``: the demo's own draw, all 12."""
    if values is None:
        return demo_data.make_people(seed, n)
    if not 2 <= values <= min(len(demo_data.CITIES), len(demo_data.PROFESSIONS)):
        raise ValueError(f"values must be between 2 and {len(demo_data.CITIES)}, got {values}")
    rng = random.Random(f"xllama-people-{seed}")
    return [{"name": name, "city": rng.choice(demo_data.CITIES[:values]),
             "job": rng.choice(demo_data.PROFESSIONS[:values])}
            for name in demo_data.invented_names(rng, n)]


def split_people(people: List[Dict[str, str]], held_out: int) -> tuple:
    """(people whose facts instruction data may ask about, held-out people for the QA test)."""
    if not 0 < held_out < len(people):
        raise ValueError(f"held_out must be between 1 and {len(people) - 1}, got {held_out}")
    return people[:-held_out], people[-held_out:]


def _canonical_fact(person: Dict[str, str], relation: str, language: Language) -> str:
    return render(fact_clause(person["name"], relation, person[relation], 0), language)


def answer_word(person: Dict[str, str], relation: str, language: Language) -> str:
    value = person[relation]
    return value if relation == "city" else language.lexicon.get(value, value)


def _fact_answer(person: Dict[str, str], relation: str, language: Language, short: bool) -> str:
    """The canonical sentence, or (``short``) the answer word alone: a sentence starts with the
    person's name, and a tiny model that miscopies an unseen name then recalls another person's
    fact, so QA would measure name copying rather than knowledge transfer."""
    return answer_word(person, relation, language) + "." if short else _canonical_fact(person, relation, language)


def instruction_records(rng: random.Random, language: Language, people: List[Dict[str, str]],
                        count: int, short_answers: bool = False) -> List[dict]:
    """General instructions in ``language``: fact questions about ``people``, sentence tasks."""
    records = []
    for _ in range(count):
        task = rng.choice(("ask_city", "ask_job", "ask_city", "ask_job", "write_about", "repeat"))
        if task in ("ask_city", "ask_job"):
            person, relation = rng.choice(people), task[4:]
            record = {"instruction": language.words(language.tasks[task].format(name=person["name"])),
                      "input": "", "output": _fact_answer(person, relation, language, short_answers)}
        elif task == "write_about":
            clause = random_clause(rng, generic_fact_share=0.0)
            noun = clause["subject"]["noun"]
            record = {"instruction": language.words(language.tasks[task].format(noun=noun)),
                      "input": "", "output": render(clause, language)}
        else:
            sentence = render(random_clause(rng), language)
            record = {"instruction": language.words(language.tasks[task]), "input": sentence, "output": sentence}
        records.append({**record, "lang": language.code})
    return records


def translation_pairs(rng: random.Random, target: Language, count: int,
                      exclude: Optional[set] = None) -> List[dict]:
    """English -> ``target`` pairs of fact-free sentences (no invented person appears);
    sentences in ``exclude`` (English side) are skipped, so test pairs stay unseen."""
    pairs, exclude = [], exclude or set()
    while len(pairs) < count:
        clause = random_clause(rng)
        english = render(clause, ENGLISH)
        if english in exclude:
            continue
        pairs.append({"src": english, "tgt": render(clause, target)})
    return pairs


def qa_items(language: Language, people: List[Dict[str, str]], short_answers: bool = False) -> List[dict]:
    """Both facts of each person asked in ``language``; ``answer`` is the gold word (city names
    are shared by all languages, professions are translated), ``output`` the canonical sentence."""
    items = []
    for person in people:
        for relation in ("city", "job"):
            items.append({
                "instruction": language.words(language.tasks[f"ask_{relation}"].format(name=person["name"])),
                "input": "", "output": _fact_answer(person, relation, language, short_answers),
                "answer": answer_word(person, relation, language), "relation": relation,
                "name": person["name"], "lang": language.code,
            })
    return items


def documents(rng: random.Random, language: Language, count: int, sentences: int) -> List[str]:
    """Fact-free plain text in ``language`` (grammar sentences and unnamed-person facts)."""
    return [" ".join(render(random_clause(rng), language) for _ in range(sentences)) for _ in range(count)]


def dictionary(language: Language) -> List[str]:
    """``english target`` lines (the MUSE format of tools/build_alignment_table.py)."""
    return [f"{english} {word}" for english, word in sorted(language.lexicon.items())]


@dataclass
class XllamaDataConfig:
    seed: int = 1234
    people: int = 48
    held_out_people: int = 16
    english_instructions: int = 2000
    target_instructions: int = 1000
    translation_pool: int = 4000
    translation_test: int = 100
    target_docs: int = 150
    sentences_per_doc: int = 8
    attribute_values: Optional[int] = None  # see make_people
    short_answers: bool = False  # fact questions answered by the word alone (see _fact_answer)


def write_corpus(cfg: XllamaDataConfig, directory: str) -> Dict[str, str]:
    """Every file of the miniature under ``directory`` (JSON lines); returns name -> path."""
    os.makedirs(directory, exist_ok=True)
    people = make_people(cfg.seed, cfg.people, cfg.attribute_values)
    train_people, test_people = split_people(people, cfg.held_out_people)
    languages = make_languages(cfg.seed, reserved=[p["name"] for p in people])
    rng = random.Random(f"xllama-data-{cfg.seed}")
    paths: Dict[str, str] = {}

    def write(name: str, rows: List[dict]):
        paths[name] = os.path.join(directory, name + ".jsonl")
        with open(paths[name], "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    short = cfg.short_answers
    write("instructions_en", instruction_records(rng, ENGLISH, train_people, cfg.english_instructions, short))
    for code, language in languages.items():
        write(f"instructions_{code}", instruction_records(rng, language, train_people, cfg.target_instructions,
                                                          short))
        test = translation_pairs(rng, language, cfg.translation_test)
        write(f"translation_test_{code}", test)
        write(f"translation_{code}", translation_pairs(rng, language, cfg.translation_pool,
                                                        exclude={p["src"] for p in test}))
        write(f"qa_{code}", qa_items(language, test_people, short))
        write(f"docs_{code}", [{"text": t} for t in documents(rng, language, cfg.target_docs, cfg.sentences_per_doc)])
        paths[f"dictionary_{code}"] = os.path.join(directory, f"dictionary_{code}.txt")
        with open(paths[f"dictionary_{code}"], "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in dictionary(language))
    write("qa_en", qa_items(ENGLISH, test_people, short))
    paths["languages"] = os.path.join(directory, "languages.json")
    with open(paths["languages"], "w", encoding="utf-8") as handle:
        json.dump({code: {"name": lang.name, "reorder": lang.reorder} for code, lang in languages.items()}, handle)
    return paths
