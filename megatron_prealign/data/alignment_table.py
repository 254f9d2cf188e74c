"""The alignment table: frequent English words and their translations (JSON lines).

One English word a line (docs/architecture.md, "Formats")::

    {"word": "bank", "count": 1234, "translations": {"de": ["Bank", "Ufer"], "zh": ["银行"]}}

``word`` is lower case (see :mod:`megatron_prealign.data.words`). Optional ``token_ids`` gives
forms that are token ids rather than strings of the tokenizer, e.g. the En-Clone table
(:mod:`megatron_prealign.data.enclone`)::

    {"word": "bank", "count": 1234, "translations": {"enclone": ["bank"]},
     "token_ids": {"enclone": [[32301]]}}

When ``token_ids[lang]`` is present it has one id list per string in ``translations[lang]`` and
consumers use the ids instead of tokenizing the string.

Also here: the deterministic split of table words into words seen during pre-alignment and
held-out words (for the seen/unseen evaluation).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.lines import iter_lines, parse_json_object

_LANG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


@dataclass
class TableEntry:
    """One table line."""

    word: str
    count: int = 0
    translations: Dict[str, List[str]] = field(default_factory=dict)
    token_ids: Dict[str, List[List[int]]] = field(default_factory=dict)

    def to_json(self) -> str:
        record = {"word": self.word, "count": self.count, "translations": self.translations}
        if self.token_ids:
            record["token_ids"] = self.token_ids
        return json.dumps(record, ensure_ascii=False)


def normalize_word(word: str) -> str:
    """The table key of a word: stripped and lower-cased (here, not in :mod:`.words`, so that
    preprocessing does not import NLTK)."""
    return word.strip().lower()


def is_language_code(code: object) -> bool:
    return isinstance(code, str) and bool(_LANG_RE.match(code))


def parse_entry(line: str, path: str, line_no: int, max_token_id: Optional[int] = None) -> TableEntry:
    """Parse and validate one table line; raises :class:`BadInputError` naming file and line."""
    record = parse_json_object(line, path, line_no)
    word = record.get("word")
    if not isinstance(word, str) or not word.strip():
        raise BadInputError(path, line_no, "missing key: 'word' (a non-empty string)")
    count = record.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise BadInputError(path, line_no, "bad count: 'count' must be a non-negative integer")
    translations = record.get("translations")
    if not isinstance(translations, dict):
        raise BadInputError(path, line_no, "missing key: 'translations' (an object)")
    for lang, forms in translations.items():
        if not is_language_code(lang):
            raise BadInputError(path, line_no, f"bad language code: {lang!r}")
        if not isinstance(forms, list) or not all(isinstance(f, str) and f.strip() for f in forms):
            raise BadInputError(
                path, line_no, f"bad translations: {lang!r} must be a list of non-empty strings"
            )
    token_ids = record.get("token_ids", {})
    if not isinstance(token_ids, dict):
        raise BadInputError(path, line_no, "bad token_ids: expected an object")
    for lang, forms in token_ids.items():
        ok = (
            lang in translations
            and isinstance(forms, list)
            and len(forms) == len(translations[lang])
            and all(
                isinstance(ids, list)
                and ids
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
                for ids in forms
            )
        )
        if not ok:
            raise BadInputError(
                path,
                line_no,
                f"bad token_ids: {lang!r} needs one non-empty list of ids per translation",
            )
        largest = max(max(ids) for ids in forms)
        if max_token_id is not None and largest >= max_token_id:
            raise BadInputError(
                path, line_no, f"token id {largest} ({lang!r}) is outside the vocabulary "
                f"(ids < {max_token_id}): the table was made for another tokenizer")
    return TableEntry(word=word, count=count, translations=translations, token_ids=token_ids)


def read_table(
    path: str, skip: Optional[SkipCounter] = None, max_token_id: Optional[int] = None
) -> List[TableEntry]:
    """Read a table. Bad lines raise, or are counted in ``skip`` when it allows skipping.
    ``max_token_id``: token ids must lie below it (the vocabulary the ids are used with).

    Duplicate words are bad lines too (a table is a mapping).
    """
    skip = skip or SkipCounter(skip_bad_lines=False)
    entries: List[TableEntry] = []
    seen = set()
    for line_no, line in iter_lines(path, skip):
        try:
            entry = parse_entry(line, path, line_no, max_token_id)
            if entry.word in seen:
                raise BadInputError(path, line_no, f"duplicate word: {entry.word!r}")
        except BadInputError as err:
            skip.raise_or_count(err)
            continue
        seen.add(entry.word)
        entries.append(entry)
    return entries


def write_table(path: str, entries: Iterable[TableEntry]) -> int:
    """Write a table atomically; returns the number of lines."""
    n = 0
    with atomic_text_writer(path) as handle:
        for entry in entries:
            handle.write(entry.to_json() + "\n")
            n += 1
    return n


def table_languages(entries: Iterable[TableEntry]) -> List[str]:
    """All language codes that occur in the table, sorted."""
    return sorted({lang for e in entries for lang, forms in e.translations.items() if forms})


def is_held_out(word: str, held_out_fraction: float, seed: int = 0) -> bool:
    """Whether ``word`` is held out of pre-alignment.

    A hash of (seed, word), not a shuffle: the decision for a word never changes when other words
    are added to or removed from the table, so seen/unseen sets stay comparable across tables.
    """
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1], got {held_out_fraction}")
    digest = hashlib.blake2b(f"{seed}\0{word}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < held_out_fraction


def split_seen_held_out(
    words: Sequence[str], held_out_fraction: float, seed: int = 0
) -> Tuple[List[str], List[str]]:
    """Split table words into (seen in pre-alignment, held out), order preserved."""
    seen, held = [], []
    for word in words:
        (held if is_held_out(word, held_out_fraction, seed) else seen).append(word)
    return seen, held
