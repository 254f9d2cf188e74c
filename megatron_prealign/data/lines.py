"""The one reader of line-oriented inputs (tables, dictionaries, JSON lines): every bad line is a
:class:`BadInputError` that names ``FILE:LINE``; with a :class:`SkipCounter` that allows it
(``--skip-bad-lines``) a bad line is counted and reading goes on.

The preprocessing tools read in blocks for their workers (``jsonl_input.iter_line_blocks``) but
decode and parse each line with the same two functions, :func:`decode_line` and
:func:`parse_json_object`, so a line is judged the same way everywhere.
"""

from __future__ import annotations

import json
from typing import Iterator, Optional, Tuple

from megatron_prealign.data.bad_input import SkipCounter
from megatron_prealign.errors import BadInputError


def decode_line(raw: bytes, path: str, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(path, line_no, f"invalid UTF-8 at byte {error.start}") from None


def parse_json_object(line: str, path: str, line_no: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInputError(path, line_no, f"malformed JSON: {error.msg}") from None
    if not isinstance(record, dict):
        raise BadInputError(path, line_no, "malformed JSON: expected an object")
    return record


def iter_lines(path: str, skip: Optional[SkipCounter] = None) -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` of every non-blank line of ``path`` (1-based numbers)."""
    skip = skip or SkipCounter(skip_bad_lines=False)
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = decode_line(raw, path, line_no)
            except BadInputError as error:
                skip.raise_or_count(error)
                continue
            if line.strip():
                yield line_no, line


def iter_json_objects(path: str, skip: Optional[SkipCounter] = None) -> Iterator[Tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file."""
    skip = skip or SkipCounter(skip_bad_lines=False)
    for line_no, line in iter_lines(path, skip):
        try:
            record = parse_json_object(line, path, line_no)
        except BadInputError as error:
            skip.raise_or_count(error)
            continue
        yield line_no, record
