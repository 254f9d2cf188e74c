"""Instruction-data sources: which files, in which format and language, read as raw items and
rendered into (text, is_target) parts.

Formats:

* ``alpaca``: JSON objects ``{"instruction", "input", "output"}`` (``input`` optional, ``lang``
  optional), one a line, or a JSON array of them (Alpaca's / x-LLM's ``.json`` files).
* ``translation``: JSON objects ``{"src", "tgt"}``, or two aligned plain-text files (Moses layout,
  ``corpus.en-zh.en`` + ``corpus.en-zh.zh``; give both files or the common prefix). Each pair
  becomes an Alpaca record: a translation instruction (rotated by pair index), the source
  sentence as input, the target sentence as output.
* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``;
  the assistant messages are the targets.

Raw items are ``(index, path, line, payload)``: ``index`` counts the source's items from 0 (it
selects the translation instruction), ``line`` is the 1-based line (or record number in a JSON
array), ``payload`` the raw bytes (a pair of byte strings for Moses files). Parsing happens where
items are tokenized (possibly in a worker process), so every error names its file and line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.jsonl_input import expand_inputs
from megatron_prealign.instruct.templates import ROLES, PromptTemplate, language_name, translation_instruction

FORMATS = ("alpaca", "translation", "messages")
Parts = List[Tuple[str, bool]]  # (text, is_target)
RawItem = Tuple[int, str, int, object]


@dataclass
class Source:
    """One input source: a name (for --max-samples and the summary), a format, files, languages."""

    name: str
    format: str
    files: List[str]
    lang: Optional[str] = None  # alpaca / messages: the records' language (a record's "lang" wins)
    src_lang: Optional[str] = None  # translation
    tgt_lang: Optional[str] = None
    moses: bool = False  # translation from two aligned plain-text files (files = [src, tgt])
    limit: Optional[int] = None  # keep at most this many records
    sample_seed: Optional[int] = None  # with limit: a seeded sample instead of the first ones
    extra_names: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name} ({self.format}: {', '.join(self.files)})"


def moses_files(patterns: Sequence[str], src_lang: str, tgt_lang: str) -> Optional[List[str]]:
    """[source file, target file] when ``patterns`` name an aligned Moses pair: the two files
    (``x.en`` and ``x.zh`` in either order) or their common prefix ``x``; else None."""
    if len(patterns) == 1 and not os.path.exists(patterns[0]):
        pair = [f"{patterns[0]}.{src_lang}", f"{patterns[0]}.{tgt_lang}"]
        return pair if all(os.path.isfile(p) for p in pair) else None
    if len(patterns) == 2:
        ends = {p.rsplit(".", 1)[-1]: p for p in patterns}
        if set(ends) == {src_lang, tgt_lang} and src_lang != tgt_lang:
            return [ends[src_lang], ends[tgt_lang]]
    return None


def make_source(name: str, format: str, patterns: Sequence[str], lang: Optional[str] = None,
                src_lang: Optional[str] = None, tgt_lang: Optional[str] = None,
                extra_names: Optional[Mapping[str, str]] = None) -> Source:
    """A checked source (files exist, languages known); raises FileNotFoundError / ValueError."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    extra = dict(extra_names or {})
    if format == "translation":
        if not (src_lang and tgt_lang):
            raise ValueError(f"source {name}: translation data needs a source and a target language "
                             "(--src-lang / --tgt-lang, or LANG-LANG= in --translation-data)")
        language_name(src_lang, extra), language_name(tgt_lang, extra)  # unknown codes: clear error
        pair = moses_files(patterns, src_lang, tgt_lang)
        if pair is not None:
            return Source(name, format, pair, src_lang=src_lang, tgt_lang=tgt_lang, moses=True, extra_names=extra)
        return Source(name, format, expand_inputs(patterns), src_lang=src_lang, tgt_lang=tgt_lang, extra_names=extra)
    if lang is not None:
        language_name(lang, extra)
    return Source(name, format, expand_inputs(patterns), lang=lang, extra_names=extra)


# --------------------------------------------------------------------------- raw items


def _json_array_items(path: str, handle) -> Iterator[Tuple[int, bytes]]:
    try:
        records = json.loads(handle.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(path, None, f"malformed JSON array: {error}") from None
    if not isinstance(records, list):
        raise BadInputError(path, None, "malformed JSON: expected an array of records")
    for number, record in enumerate(records, start=1):
        yield number, json.dumps(record, ensure_ascii=False).encode("utf-8")


def _file_items(path: str) -> Iterator[Tuple[int, bytes]]:
    """(line or record number, raw bytes) of one JSON-lines or JSON-array file."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
        handle.seek(0)
        if head.startswith(b"["):
            yield from _json_array_items(path, handle)
            return
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line_no, raw


def _moses_items(source: Source) -> Iterator[Tuple[int, Tuple[bytes, bytes]]]:
    src_path, tgt_path = source.files
    with open(src_path, "rb") as src, open(tgt_path, "rb") as tgt:
        # Not zip(): it reads (and drops) the longer file's extra line before stopping, which
        # hid a length mismatch. Read both sides line by line; an empty read is end of file.
        line_no = 0
        while True:
            a, b = src.readline(), tgt.readline()
            if not a or not b:
                break
            line_no += 1
            yield line_no, (a.rstrip(b"\r\n"), b.rstrip(b"\r\n"))
        if a or b:
            longer = src_path if a else tgt_path
            raise BadInputError(longer, line_no + 1, f"the aligned files {src_path} and {tgt_path} "
                                "have different numbers of lines")


def _all_items(source: Source) -> Iterator[RawItem]:
    if source.moses:
        for index, (line_no, pair) in enumerate(_moses_items(source)):
            yield index, source.files[0], line_no, pair
        return
    index = 0
    for path in source.files:
        for line_no, raw in _file_items(path):
            yield index, path, line_no, raw
            index += 1


def count_items(source: Source) -> int:
    return sum(1 for _ in _all_items(source))


def iter_items(source: Source) -> Iterator[RawItem]:
    """The source's raw items in order; with a seeded sample (``sample_seed`` and ``limit``),
    only the sampled ones, still in file order."""
    if source.limit is None or source.sample_seed is None:
        yield from _all_items(source)
        return
    total = count_items(source)
    chosen = np.random.default_rng([source.sample_seed, total]).permutation(total)[: source.limit]
    keep = np.zeros(total, dtype=bool)
    keep[chosen] = True
    for item in _all_items(source):
        if keep[item[0]]:
            yield item


# --------------------------------------------------------------------------- parsing


def _decode(path: str, line: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(path, line, f"invalid UTF-8 at byte {error.start}") from None


def _json_object(path: str, line: int, raw: bytes) -> dict:
    try:
        record = json.loads(_decode(path, line, raw))
    except json.JSONDecodeError as error:
        raise BadInputError(path, line, f"malformed JSON: {error.msg}") from None
    if not isinstance(record, dict):
        raise BadInputError(path, line, "malformed JSON: expected an object")
    return record


def _text(record: dict, key: str, path: str, line: int, required: bool = True) -> str:
    value = record.get(key, None if required else "")
    if value is None:
        raise BadInputError(path, line, f"missing key: {key!r}")
    if not isinstance(value, str):
        raise BadInputError(path, line, f"missing key: {key!r} is not a string")
    return value


def render_item(source: Source, item: RawItem, template: PromptTemplate) -> Tuple[Parts, str]:
    """(parts, language) of one raw item; raises BadInputError naming the file and line."""
    index, path, line, payload = item
    if source.format == "translation":
        if source.moses:
            src = _decode(path, line, payload[0])
            tgt = _decode(source.files[1], line, payload[1])
        else:
            record = _json_object(path, line, payload)
            src, tgt = _text(record, "src", path, line), _text(record, "tgt", path, line)
        if not src.strip() or not tgt.strip():
            raise BadInputError(path, line, "empty side: a translation pair needs both sentences")
        instruction = translation_instruction(source.src_lang, source.tgt_lang, index, source.extra_names)
        prompt, response = template.render(instruction, src.strip(), tgt.strip())
        return [(prompt, False), (response, True)], source.tgt_lang
    record = _json_object(path, line, payload)
    lang = record.get("lang") if isinstance(record.get("lang"), str) else source.lang
    if source.format == "alpaca":
        instruction = _text(record, "instruction", path, line)
        output = _text(record, "output", path, line)
        if not instruction.strip():
            raise BadInputError(path, line, "empty text: 'instruction'")
        if not output.strip():
            raise BadInputError(path, line, "empty response: 'output'")
        prompt, response = template.render(instruction, _text(record, "input", path, line, False), output)
        return [(prompt, False), (response, True)], lang
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInputError(path, line, "missing key: 'messages' (a non-empty list)")
    pairs = []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadInputError(path, line, f"bad message: message {number} needs a role in {', '.join(ROLES)}")
        pairs.append((message["role"], _text(message, "content", path, line)))
    if pairs[-1][0] != "assistant" or not pairs[-1][1].strip():
        raise BadInputError(path, line, "empty response: the last message must be a non-empty assistant message")
    return template.render_messages(pairs), lang
