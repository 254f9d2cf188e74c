"""Reading bilingual dictionaries (English -> one target language) for the alignment table.

Accepted formats, detected per file from the first non-blank line:

* MUSE: ``src<TAB>tgt`` or ``src tgt`` a line (the first tab, else the first run of spaces,
  separates the two sides). Several lines may share one source word.
* JSON lines from the paper's public code, either ``{"src_text": "bank", "tgt_text": "银行"}`` or
  ``{"words": "bank $ 银行 $ 水岸"}`` (English first, then its translations, separated by ``$``).
  A ``$`` inside ``tgt_text`` separates several translations as well.

English sides are normalised like table words (stripped, lower-cased); translations are kept
as written (stripped, Unicode NFC). Order of first appearance is kept, duplicates dropped.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Dict, List, Optional, Tuple

from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.words import normalize_word

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
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(path, line_no, f"malformed JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise BadInputError(path, line_no, "malformed JSON: expected an object")
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


def read_dictionary(path: str, skip: Optional[SkipCounter] = None) -> Dictionary:
    """Read one dictionary file into ``{english word: [translations...]}``."""
    skip = skip or SkipCounter(skip_bad_lines=False)
    result: Dictionary = {}
    parse = None
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadInputError(path, line_no, "invalid UTF-8") from None
                if not line.strip():
                    continue
                if parse is None:
                    parse = _parse_json if line.lstrip().startswith("{") else _parse_muse
                src, tgts = parse(line, path, line_no)
                if not src.strip():
                    raise BadInputError(path, line_no, "dictionary line without a source word")
            except BadInputError as err:
                skip.raise_or_count(err)
                continue
            forms = result.setdefault(normalize_word(src), [])
            for tgt in tgts:
                tgt = unicodedata.normalize("NFC", tgt)
                if tgt not in forms:
                    forms.append(tgt)
    return result
