"""Codeswitching one document: replace English table words by translations, build the loss mask.

Rules (documented for users in docs/data.md):

* Words are found with :data:`megatron_prealign.data.words.WORD_PATTERN`; the *word position* is
  the index of the word among all words of the document.
* A word is **eligible** when it is a table word (matched in its lower-case, Capitalised or
  UPPER-CASE spelling), has at least one translation in the requested languages, and starts a
  tokenizer word: it is at the start of the document or preceded by whitespace (exactly where
  SentencePiece puts "▁" and byte-level BPE puts "Ġ"). "(bank" or "x-bank" are not switched.
* Each eligible word switches with probability ``ratio``; the translation is chosen uniformly
  among the requested languages the word has, then uniformly among that language's forms. Both
  draws are a hash of ``(seed, document index, key index, word position)`` (splitmix64), so the
  output does not depend on how documents are spread over worker processes.
* A Capitalised word gets a translation with an upper-case first letter, an UPPER-CASE word an
  upper-cased translation (a no-op for scripts without case).
* The switched text is tokenized as a whole, so a translation is tokenized exactly as it appears
  in running text. Tokens overlapping a translation or the single space before it (which the
  tokenizer folds into the word-start token) are the *switched tokens*: loss mask 0 in
  ``input-only`` mode, 1 in ``original`` mode. ``none`` switches nothing.
* A table language whose forms are token ids (``token_ids`` in the table, e.g. En-Clone) does not
  change the text: the tokens of the switched word are replaced by the table's ids.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.alignment_table import TableEntry
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.words import WORD_PATTERN, normalize_word

CODESWITCH_MODES = ("input-only", "original", "none")

_SPLIT_RE = re.compile(f"({WORD_PATTERN})")
_MASK64 = (1 << 64) - 1


def _splitmix64_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, as splitmix64 needs.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def word_uniforms(
    seed: int, doc_index: int, key_index: int, positions: Sequence[int]
) -> Tuple[np.ndarray, np.ndarray]:
    """Two independent U[0,1) draws per word position; a pure function of its arguments."""
    base = _splitmix64_int(_splitmix64_int(_splitmix64_int(seed & _MASK64) ^ doc_index) ^ key_index)
    pos = np.asarray(positions, dtype=np.uint64) * np.uint64(2)
    draws = _splitmix64_array(np.uint64(base) ^ np.stack([pos, pos + np.uint64(1)]))
    # Top 53 bits -> float64 in [0, 1).
    uniforms = (draws >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return uniforms[0], uniforms[1]


@dataclass
class SwitchStats:
    """Counts for one document (summed by the tools for their summaries)."""

    words: int = 0
    eligible: int = 0
    switched: int = 0
    masked_tokens: int = 0

    def add(self, other: "SwitchStats") -> None:
        self.words += other.words
        self.eligible += other.eligible
        self.switched += other.switched
        self.masked_tokens += other.masked_tokens


@dataclass
class _Choices:
    """Translations of one table word in the requested languages (language order kept)."""

    forms: List[List[str]]  # per language
    ids: List[Optional[List[List[int]]]]  # per language: token-id forms, or None for strings


def _apply_case(form: str, casing: str) -> str:
    if casing == "upper":
        return form.upper()
    if casing == "title":
        return form[:1].upper() + form[1:]
    return form


class Codeswitcher:
    """Applies the rules of the module docstring; one instance per process."""

    def __init__(
        self,
        entries: Sequence[TableEntry],
        languages: Sequence[str],
        ratio: float,
        mode: str,
        seed: int,
        encoder: TextEncoder,
    ) -> None:
        if mode not in CODESWITCH_MODES:
            raise ValueError(f"codeswitch mode must be one of {CODESWITCH_MODES}, got {mode!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"codeswitch ratio must be in [0, 1], got {ratio}")
        self.ratio = ratio
        self.mode = mode
        self.seed = seed
        self.encoder = encoder
        self._lookup: Dict[str, Tuple[_Choices, str]] = {}
        needs_offsets = mode == "input-only"
        for entry in entries:
            forms, ids = [], []
            for lang in languages:
                lang_forms = entry.translations.get(lang) or []
                if lang_forms:
                    forms.append(lang_forms)
                    ids.append(entry.token_ids.get(lang))
                    needs_offsets |= lang in entry.token_ids
            if not forms:
                continue
            choices = _Choices(forms, ids)
            word = normalize_word(entry.word)
            # Insert UPPER first so that for one-letter words the Capitalised reading wins.
            for variant, casing in ((word.upper(), "upper"), (word[:1].upper() + word[1:], "title"), (word, "lower")):
                self._lookup[variant] = (choices, casing)
        if mode != "none" and needs_offsets and not encoder.supports_offsets:
            encoder.encode_with_offsets("")  # raises the explanatory NotImplementedError

    @property
    def eligible_vocabulary(self) -> int:
        """Number of spellings (3 per table word with a translation) that can switch."""
        return len(self._lookup)

    def process(
        self, text: str, doc_index: int, key_index: int = 0
    ) -> Tuple[List[int], Optional[np.ndarray], SwitchStats]:
        """Token ids, loss mask (uint8; None means all ones) and counts for one document."""
        stats = SwitchStats()
        if self.mode == "none" or self.ratio == 0.0:
            return self.encoder.encode(text), None, stats
        parts = _SPLIT_RE.split(text)  # [sep0, word0, sep1, word1, ..., sepN]
        words = parts[1::2]
        stats.words = len(words)
        lookup = self._lookup
        eligible = [
            i
            for i, w in enumerate(words)
            if w in lookup and (parts[2 * i][-1:].isspace() or (i == 0 and not parts[0]))
        ]
        stats.eligible = len(eligible)
        if not eligible:
            return self.encoder.encode(text), None, stats
        u, v = word_uniforms(self.seed, doc_index, key_index, eligible)
        switched = np.flatnonzero(u < self.ratio)
        if switched.size == 0:
            return self.encoder.encode(text), None, stats
        stats.switched = int(switched.size)

        text_switches: List[int] = []  # part indices whose text was replaced
        id_switches: List[Tuple[int, List[int]]] = []  # (part index, replacement ids)
        for k in switched.tolist():
            i = eligible[k]
            choices, casing = lookup[words[i]]
            scaled = float(v[k]) * len(choices.forms)
            lang_idx = min(int(scaled), len(choices.forms) - 1)
            forms = choices.forms[lang_idx]
            form_idx = min(int((scaled - lang_idx) * len(forms)), len(forms) - 1)
            id_forms = choices.ids[lang_idx]
            if id_forms is not None:
                id_switches.append((2 * i + 1, id_forms[form_idx]))
            else:
                parts[2 * i + 1] = _apply_case(forms[form_idx], casing)
                text_switches.append(2 * i + 1)

        new_text = "".join(parts) if text_switches else text
        if self.mode == "original" and not id_switches:
            return self.encoder.encode(new_text), None, stats

        ids, offsets = self.encoder.encode_with_offsets(new_text)
        part_starts = np.cumsum([0] + [len(p) for p in parts])
        spans = []  # (char start incl. preceding space, char end, replacement ids or None)
        replacements = dict(id_switches)
        for part in sorted(text_switches + list(replacements)):
            start, end = int(part_starts[part]), int(part_starts[part + 1])
            # The space before a word belongs to its word-start token ("▁Ufer", "ĠUfer", or a
            # lone "▁" before byte pieces); a newline or tab is a token of its own in byte-level
            # BPE and stays a target.
            if start > 0 and new_text[start - 1] == " ":
                start -= 1
            spans.append((start, end, replacements.get(part)))
        return self._splice_and_mask(ids, offsets, spans, stats)

    def _splice_and_mask(self, ids, offsets, spans, stats):
        out_ids: List[int] = []
        out_mask: List[np.ndarray] = []
        cursor = 0
        covered_end = lambda t: max(t[1], t[0] + 1)  # noqa: E731  empty byte pieces cover 1 char
        for start, end, replacement in spans:
            first = bisect.bisect_right(offsets, start, lo=cursor, key=covered_end)
            last = first
            while last < len(offsets) and offsets[last][0] < end:
                last += 1
            out_ids.extend(ids[cursor:first])
            out_mask.append(np.ones(first - cursor, dtype=np.uint8))
            word_ids = ids[first:last] if replacement is None else list(replacement)
            out_ids.extend(word_ids)
            masked = self.mode == "input-only"
            out_mask.append(np.full(len(word_ids), 0 if masked else 1, dtype=np.uint8))
            stats.masked_tokens += len(word_ids) if masked else 0
            cursor = last
        out_ids.extend(ids[cursor:])
        out_mask.append(np.ones(len(ids) - cursor, dtype=np.uint8))
        return out_ids, np.concatenate(out_mask), stats
