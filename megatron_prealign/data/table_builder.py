"""Building the alignment table: count English words, keep frequent ones, join dictionaries.

Used by ``tools/build_alignment_table.py``. Steps:

1. Count words of the English corpus as :func:`megatron_prealign.data.words.count_words`
   defines them (NLTK's word tokenizer, lower-cased), with its fast equivalent
   :func:`~megatron_prealign.data.words.corpus_words`; with ``workers > 1`` chunks of lines are
   counted in worker processes and the counts summed (the same counts as one pass).
2. Keep words with ``count >= min_count``; with ``top_fraction`` only that most frequent share
   of those word types (ties broken alphabetically, so the result is deterministic).
3. For each kept word and language, the dictionary's translations in file order, NFC, deduped,
   translations equal to the English word (case-insensitively) dropped unless
   ``keep_identical``, at most ``max_translations``.
4. Words without any translation are not written.

Coverage for a language = share of the corpus' word tokens whose word has a translation in that
language in the table (the quantity codeswitching can act on).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from megatron_prealign.data.alignment_table import TableEntry
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.dictionaries import Dictionary
from megatron_prealign.data.jsonl_input import iter_raw_lines, parse_document
from megatron_prealign.data.parallel import ordered_bounded_map
from megatron_prealign.data.words import corpus_words

_CHUNK_LINES = 256


def _count_chunk(args: Tuple[str, List[Tuple[str, int, bytes]]]) -> Tuple[Counter, list]:
    key, chunk = args
    counts: Counter = Counter()
    bad = []
    for path, line_no, raw in chunk:
        try:
            text = parse_document(raw, [key], path, line_no)[key]
        except BadInputError as err:
            bad.append((err.path, err.line, err.message))
            continue
        counts.update(corpus_words(text))
    return counts, bad


def _chunks(files: Sequence[str], key: str) -> Iterable:
    chunk = []
    for item in iter_raw_lines(files):
        chunk.append(item)
        if len(chunk) == _CHUNK_LINES:
            yield key, chunk
            chunk = []
    if chunk:
        yield key, chunk


def count_corpus_words(
    files: Sequence[str],
    json_key: str,
    skip: SkipCounter,
    workers: int = 1,
    progress=None,
) -> Counter:
    """Word counts of a JSON-lines corpus."""
    counts: Counter = Counter()
    pool = None
    try:
        if workers > 1:
            pool = multiprocessing.get_context("fork").Pool(workers)
            results = ordered_bounded_map(pool, _count_chunk, _chunks(files, json_key), 2 * workers)
        else:
            results = map(_count_chunk, _chunks(files, json_key))
        for chunk_counts, bad in results:
            counts.update(chunk_counts)
            for path, line_no, message in bad:
                skip.raise_or_count(BadInputError(path, line_no, message))
            if progress is not None:
                progress.update(_CHUNK_LINES)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return counts


def select_frequent(counts: Counter, min_count: int, top_fraction: Optional[float]) -> List[str]:
    """Words with ``count >= min_count``, most frequent first, cut to ``top_fraction``."""
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"--top-fraction must be in (0, 1], got {top_fraction}")
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if top_fraction is not None:
        words = words[: int(round(len(words) * top_fraction))]
    return words


def build_entries(
    words: Sequence[str],
    counts: Counter,
    dictionaries: Dict[str, Dictionary],
    max_translations: int = 5,
    keep_identical: bool = False,
) -> List[TableEntry]:
    """Table entries (step 3 and 4 of the module docstring), in ``words`` order."""
    entries = []
    for word in words:
        translations = {}
        for lang, dictionary in dictionaries.items():
            forms = [
                t for t in dictionary.get(word, [])
                if keep_identical or t.casefold() != word.casefold()
            ][:max_translations]
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
    from megatron_prealign.data.alignment_table import is_language_code

    pairs = []
    for spec in specs:
        lang, sep, path = spec.partition("=")
        if not sep or not is_language_code(lang) or not path:
            raise ValueError(f"--dictionary expects LANG=PATH, got {spec!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dictionary file not found: {path}")
        pairs.append((lang, path))
    return pairs
