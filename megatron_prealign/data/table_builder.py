"""Building the alignment table: count English words, keep frequent ones, join dictionaries.

Used by ``tools/build_alignment_table.py``. Steps:

1. Count words of the English corpus as :func:`megatron_prealign.data.words.count_words`
   defines them (NLTK's word tokenizer, lower-cased), with its fast equivalent
   :func:`~megatron_prealign.data.words.corpus_words`; with ``workers > 1`` blocks of lines are
   counted in worker processes and the counts summed (the same counts as one pass). Across
   machines: each counts its share of the files and saves the counts (:func:`write_counts`); the
   table is built from their sum (:func:`read_counts`), again the same counts as one pass.
2. Keep words with ``count >= min_count``; with ``top_fraction`` only that most frequent share
   of those word types (ties broken alphabetically, so the result is deterministic).
3. For each kept word and language, the dictionary's translations in file order, NFC, deduped,
   translations equal to the English word (case-insensitively) dropped unless
   ``keep_identical``, at most ``max_translations``.
4. Words without any translation are not written.

Options for real dictionaries (whose file order is not a preference order and whose entries
for frequent function words are poor, e.g. Ding's "is" -> "west"):

* ``exclude_words`` (``--exclude-stopwords``: :data:`ENGLISH_STOPWORDS`): English words never
  written, so the table holds content words only;
* ``target_counts`` (``--target-corpus LANG=FILES``): word counts of a target-language corpus
  (lower-cased like English words). Translations seen fewer than ``min_target_count`` times
  there are dropped, and the rest are ordered by that count, most frequent first, before the
  ``max_translations`` cut (ties keep file order).

Coverage for a language = share of the corpus' word tokens whose word has a translation in that
language in the table (the quantity codeswitching can act on).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_prealign.data.alignment_table import TableEntry, is_language_code
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.dictionaries import Dictionary
from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.data.jsonl_input import LineBlock, iter_line_blocks, parse_documents
from megatron_prealign.data.workers import parallel_map
from megatron_prealign.data.words import corpus_words

def _count_block(args: Tuple[str, LineBlock]) -> Tuple[Counter, list, int]:
    key, block = args
    counts: Counter = Counter()
    docs, bad = parse_documents([line for _, line in block.lines()], [key])
    for _, texts in docs:
        counts.update(corpus_words(texts[key]))
    return counts, bad, len(block.data)


def count_corpus_words(
    files: Sequence[str],
    json_key: str,
    skip: SkipCounter,
    workers: int = 1,
    progress=None,
) -> Counter:
    """Word counts of a JSON-lines corpus; ``progress`` (a tqdm bar) is advanced in input bytes."""
    counts: Counter = Counter()
    tasks = ((json_key, block) for block in iter_line_blocks(files))
    with parallel_map(_count_block, tasks, workers) as results:
        for block_counts, bad, nbytes in results:
            counts.update(block_counts)
            for path, line_no, message in bad:
                skip.raise_or_count(BadInputError(path, line_no, message))
            if progress is not None:
                progress.update(nbytes)
    return counts


def write_counts(path: str, counts: Counter) -> None:
    """Word counts as ``word<TAB>count`` lines, most frequent first (atomically): one machine's
    share of a corpus, summed later by :func:`read_counts` (``--save-counts`` / ``--input-counts``).
    Words never hold whitespace (they are word-tokenizer tokens)."""
    with atomic_text_writer(path) as out:
        for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            out.write(f"{word}\t{count}\n")


def read_counts(paths: Sequence[str]) -> Counter:
    """The sum of the counts files at ``paths``; bad lines raise :class:`BadInputError`."""
    total: Counter = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                word, sep, count = line.rstrip("\n").partition("\t")
                if not sep or not word or not count.isdigit():
                    raise BadInputError(path, line_no, "expected 'word<TAB>count' (a counts file "
                                        "written by build_alignment_table.py --save-counts)")
                total[word] += int(count)
    return total


def select_frequent(counts: Counter, min_count: int, top_fraction: Optional[float]) -> List[str]:
    """Words with ``count >= min_count``, most frequent first, cut to ``top_fraction``."""
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"--top-fraction must be in (0, 1], got {top_fraction}")
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if top_fraction is not None:
        words = words[: int(round(len(words) * top_fraction))]
    return words


# NLTK's English stop-word list (``nltk.corpus.stopwords.words("english")``, which needs a data
# download): function words whose dictionary translations are mostly wrong out of context.
ENGLISH_STOPWORDS = frozenset("""
a about above after again against ain all am an and any are aren aren't as at be because been
before being below between both but by can couldn couldn't d did didn didn't do does doesn
doesn't doing don don't down during each few for from further had hadn hadn't has hasn hasn't
have haven haven't having he her here hers herself him himself his how i if in into is isn isn't
it it's its itself just ll m ma me mightn mightn't more most mustn mustn't my myself needn
needn't no nor not now o of off on once only or other our ours ourselves out over own re s same
shan shan't she she's should should've shouldn shouldn't so some such t than that that'll the
their theirs them themselves then there these they this those through to too under until up ve
very was wasn wasn't we were weren weren't what when where which while who whom why will with
won won't wouldn wouldn't y you you'd you'll you're you've your yours yourself yourselves
""".split())


def build_entries(
    words: Sequence[str],
    counts: Counter,
    dictionaries: Dict[str, Dictionary],
    max_translations: int = 5,
    keep_identical: bool = False,
    exclude_words: frozenset = frozenset(),
    target_counts: Optional[Dict[str, Counter]] = None,
    min_target_count: int = 1,
) -> List[TableEntry]:
    """Table entries (step 3 and 4 and the options of the module docstring), in ``words`` order."""
    entries = []
    for word in words:
        if word in exclude_words:
            continue
        translations = {}
        for lang, dictionary in dictionaries.items():
            forms = [
                t for t in dictionary.get(word, [])
                if keep_identical or t.casefold() != word.casefold()
            ]
            target = (target_counts or {}).get(lang)
            if target is not None:
                forms = [t for t in forms if target[t.lower()] >= min_target_count]
                forms.sort(key=lambda t: -target[t.lower()])  # stable: ties keep file order
            forms = forms[:max_translations]
            if forms:
                translations[lang] = forms
        if translations:
            entries.append(TableEntry(word=word, count=counts[word], translations=translations))
    return entries


@dataclass
class Coverage:
    language: str
    table_words: int
    covered_tokens: int
    total_tokens: int

    @property
    def share(self) -> float:
        return self.covered_tokens / self.total_tokens if self.total_tokens else 0.0


def coverage(entries: Sequence[TableEntry], counts: Counter, languages: Sequence[str]) -> List[Coverage]:
    """Per language (and ``"any"``), the share of corpus word tokens the table translates."""
    total = sum(counts.values())
    result = []
    for lang in list(languages) + ["any"]:
        chosen = [e for e in entries if (lang == "any" or lang in e.translations)]
        covered = sum(counts[e.word] for e in chosen)
        result.append(Coverage(lang, len(chosen), covered, total))
    return result


def parse_dictionary_args(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """``LANG=PATH`` arguments -> [(lang, path)]; several files per language are allowed."""
    pairs = []
    for spec in specs:
        lang, sep, path = spec.partition("=")
        if not sep or not is_language_code(lang) or not path:
            raise ValueError(f"--dictionary expects LANG=PATH, got {spec!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dictionary file not found: {path}")
        pairs.append((lang, path))
    return pairs
