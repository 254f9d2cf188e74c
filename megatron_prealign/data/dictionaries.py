"""Reading bilingual dictionaries (English -> one target language) for the alignment table.

Accepted formats, detected per file from the first non-blank line:

* MUSE: ``src<TAB>tgt`` or ``src tgt`` a line (the first tab, else the first run of spaces,
  separates the two sides). Several lines may share one source word.
* Ding (the TU Chemnitz German-English dictionary, Debian package ``trans-de-en``,
  ``/usr/share/trans/de-en``): ``German senses :: English senses`` lines, detected by `` :: ``
  (``#`` lines are comments); see :func:`parse_ding_line` for its quirks.
* JSON lines from the paper's public code, either ``{"src_text": "bank", "tgt_text": "银行"}`` or
  ``{"words": "bank $ 银行 $ 水岸"}`` (English first, then its translations, separated by ``$``).
  A ``$`` inside ``tgt_text`` separates several translations as well.

English sides are normalised like table words (stripped, lower-cased); translations are kept
as written (stripped, Unicode NFC). Order of first appearance is kept, duplicates dropped.
"""

from __future__ import annotations

import unicodedata
import re
from typing import Dict, List, Optional, Tuple

from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.lines import iter_lines, parse_json_object
from megatron_prealign.data.words import is_word, normalize_word

Dictionary = Dict[str, List[str]]


def _split_dollar(text: str) -> List[str]:
    return [part.strip() for part in text.split("$")]


def _parse_muse(line: str, path: str, line_no: int) -> Tuple[str, List[str]]:
    stripped = line.strip()
    if "\t" in stripped:
        src, _, tgt = stripped.partition("\t")
    else:
        parts = stripped.split(None, 1)
        src, tgt = parts[0], (parts[1] if len(parts) > 1 else "")
    if not tgt.strip():
        raise BadInputError(path, line_no, f"dictionary line without a translation: {src!r}")
    return src, [tgt.strip()]


def _parse_json(line: str, path: str, line_no: int) -> Tuple[str, List[str]]:
    record = parse_json_object(line, path, line_no)
    if "words" in record:
        if not isinstance(record["words"], str):
            raise BadInputError(path, line_no, "missing key: 'words' must be a string")
        parts = _split_dollar(record["words"])
        src, tgts = parts[0], parts[1:]
    elif "src_text" in record or "tgt_text" in record:
        src, tgt = record.get("src_text"), record.get("tgt_text")
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise BadInputError(
                path, line_no, "missing key: need string 'src_text' and 'tgt_text'"
            )
        tgts = _split_dollar(tgt)
    else:
        raise BadInputError(
            path, line_no, "missing key: expected 'words' or 'src_text'/'tgt_text'"
        )
    tgts = [t for t in tgts if t]
    if not tgts:
        raise BadInputError(path, line_no, f"dictionary line without a translation: {src!r}")
    return src, tgts


_ANNOTATION_RE = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]|\([^()]*\)|/[^/ ][^/]*\.?/|<[^<>]*>")
_SENTENCE_END = (".", "?", "!")


def _split_top_level(text: str, separator: str) -> List[str]:
    """Split at ``separator`` outside brackets (Ding puts ``;`` inside some annotations)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def clean_ding_term(term: str, english: bool) -> Optional[str]:
    """One Ding synonym reduced to a single word, or None.

    Annotations are dropped: parts of speech and genders ``{m}`` ``{vt}`` ``{pl}``, usage and
    region labels ``[ugs.]`` ``[Br.]``, explanations ``(of a person)``, abbreviations ``/Abf./``.
    English infinitives lose their ``to`` ("to run" -> "run"). Entries that are still several
    words (phrases, "eel stock", "jdm. einen Korb geben") are not single words: None.
    Capitalisation is kept (German nouns are capitalised; English keys are lower-cased later).
    """
    term = _ANNOTATION_RE.sub(" ", term)
    term = _ANNOTATION_RE.sub(" ", term)  # nested annotations, e.g. "(zoologische (Ordnung))"
    words = term.replace("’", "'").split()
    if english and len(words) == 2 and words[0] == "to":
        words = words[1:]
    if len(words) != 1 or not is_word(words[0]):
        return None
    return unicodedata.normalize("NFC", words[0])


def parse_ding_line(line: str, path: str = "", line_no: int = 0) -> List[Tuple[str, List[str]]]:
    """English -> German pairs of one Ding line ``de1 | de2 :: en1 | en2``.

    ``|`` separates senses (the i-th German sense translates the i-th English one: the headword,
    its plural or conjugated forms, phrases, example sentences), ``;`` separates synonyms within
    a sense. Every single-word English synonym of a sense gets every single-word German synonym
    of the same sense, in file order. A line whose two sides have different sense counts pairs
    only its first senses (the headwords).
    """
    if line.lstrip().startswith("#"):
        return []
    german, sep, english = line.strip().partition(" :: ")
    if not sep:
        raise BadInputError(path, line_no, "Ding line without ' :: ' between German and English")
    de_senses, en_senses = german.split(" | "), english.split(" | ")
    if len(de_senses) != len(en_senses):
        de_senses, en_senses = de_senses[:1], en_senses[:1]
    pairs = []
    for de_sense, en_sense in zip(de_senses, en_senses):
        targets = [t for t in (clean_ding_term(x, english=False)
                               for x in _split_top_level(de_sense, ";")) if t]
        if not targets:
            continue
        for source in _split_top_level(en_sense, ";"):
            source = clean_ding_term(source, english=True)
            if source:
                pairs.append((source, list(dict.fromkeys(targets))))
    return pairs


def ding_parallel_sentences(path: str, min_words: int = 4) -> List[Tuple[str, str]]:
    """(English, German) example sentences of a Ding file: senses that are whole sentences on
    both sides (end in ``.``/``?``/``!``, at least ``min_words`` words, no synonyms), annotations
    removed. Sentence-level parallel text for the cross-lingual retrieval evaluation."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or " :: " not in line:
                continue
            german, _, english = line.strip().partition(" :: ")
            de_senses, en_senses = german.split(" | "), english.split(" | ")
            if len(de_senses) != len(en_senses):
                continue
            for de, en in zip(de_senses, en_senses):
                de = re.sub(r"\s+", " ", _ANNOTATION_RE.sub(" ", de)).strip()
                en = re.sub(r"\s+", " ", _ANNOTATION_RE.sub(" ", en)).strip()
                if (";" in de or ";" in en or "/" in de or "/" in en
                        or not de.endswith(_SENTENCE_END) or not en.endswith(_SENTENCE_END)
                        or len(de.split()) < min_words or len(en.split()) < min_words):
                    continue
                pairs.append((unicodedata.normalize("NFC", en), unicodedata.normalize("NFC", de)))
    return list(dict.fromkeys(pairs))


def _parse_ding(line: str, path: str, line_no: int) -> List[Tuple[str, List[str]]]:
    return parse_ding_line(line, path, line_no)


def read_dictionary(path: str, skip: Optional[SkipCounter] = None) -> Dictionary:
    """Read one dictionary file into ``{english word: [translations...]}``."""
    skip = skip or SkipCounter(skip_bad_lines=False)
    result: Dictionary = {}
    parse = None
    for line_no, line in iter_lines(path, skip):
        try:
            if parse is None:
                if line.lstrip().startswith("#") or " :: " in line:
                    parse = _parse_ding
                elif line.lstrip().startswith("{"):
                    parse = _parse_json
                else:
                    parse = _parse_muse
            pairs = parse(line, path, line_no)
            if parse is not _parse_ding:
                pairs = [pairs]
            for src, _ in pairs:
                if not src.strip():
                    raise BadInputError(path, line_no, "dictionary line without a source word")
        except BadInputError as err:
            skip.raise_or_count(err)
            continue
        for src, tgts in pairs:
            forms = result.setdefault(normalize_word(src), [])
            for tgt in tgts:
                tgt = unicodedata.normalize("NFC", tgt)
                if tgt not in forms:
                    forms.append(tgt)
    return result
