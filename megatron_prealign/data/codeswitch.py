"""Codeswitching one document: replace English table words by translations, build the loss mask.

Word boundaries come from the tokenizer. The document is tokenized once, as without
codeswitching; table words are then found *in the token ids*:

* Every table word is registered by the token ids of its running-text form (" bank" ->
  ``▁bank`` / ``Ġbank``, :meth:`TextEncoder.form_ids`) in three spellings: lower-case,
  Capitalised and UPPER-CASE. Where the form without the leading space tokenizes differently
  (byte-level BPE: ``bank`` vs ``Ġbank``) that form is registered too; it counts only at the
  start of the document or after a token ending in whitespace (a newline).
* A match is **eligible** when the token after it does not continue the word (it starts with a
  space, punctuation, or is the end). So "(bank" (``(`` + ``bank``), "x-bank" and "bank-x"
  ("-" continues a word), "banking" are never switched; "bank," and "bank's" are.
* Each eligible word switches with probability ``ratio``; the translation is chosen uniformly
  among the requested languages the word has, then uniformly among that language's forms. Both
  draws are a hash (splitmix64) of ``(seed, document index, key index, word position)`` where
  the word position is the index of the word's first token, so the output does not depend on
  how documents are spread over worker processes.
* A Capitalised word gets a translation with an upper-case first letter, an UPPER-CASE word an
  upper-cased translation (a no-op for scripts without case).
* The word's tokens are replaced by the translation's running-text tokens (with or without the
  leading space, like the word they replace). Because SentencePiece and byte-level BPE never
  merge tokens across whitespace or between letters and punctuation, this equals tokenizing the
  switched text (tests check it). These are the *switched tokens*: loss mask 0 in ``input-only``
  mode, 1 in ``original`` mode. ``none`` switches nothing.
* A table language whose forms are token ids (``token_ids`` in the table, e.g. En-Clone) uses
  the table's ids as the replacement. An En-Clone form (the word's own tokens shifted by a
  constant beyond the tokenizer's vocabulary) is applied as that shift to the matched spelling,
  so "Bank" becomes the clone of "Bank", not of "bank".

Finding words in token ids and splicing in their translations are two loops over the tokens,
compiled with numba (a hash table of every form, compared token by token), which keeps
codeswitching within a few percent of plain tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.alignment_table import TableEntry, normalize_word
from megatron_prealign.data.text_encoder import TextEncoder

CODESWITCH_MODES = ("input-only", "original", "none")

_MASK64 = (1 << 64) - 1


def _njit(fn):
    """``numba.njit``, kept in numba's on-disk cache where it finds a writable place (next to this
    file, else the user's cache directory, or ``NUMBA_CACHE_DIR``); else compiled per process."""
    import numba

    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(fn)


_KERNELS: List[str] = []  # the functions below that numba compiles, by name


def _compiled(fn):
    """Marks ``fn`` for :func:`_jit`: importing numba costs about a second, which a CLI's
    ``--help`` (it imports this module for CODESWITCH_MODES) should not pay."""
    _KERNELS.append(fn.__name__)
    return fn


def _jit() -> None:
    """Replaces the marked functions by their numba versions, once; every entry point that runs
    them calls it first (they call each other through these module globals)."""
    for name in _KERNELS:
        globals()[name] = _njit(globals()[name])
    _KERNELS.clear()


# The switch and translation draws are splitmix64 hashes of (seed, document index, key index,
# word position): the same arithmetic serves numpy (keys, tests) and the compiled loops below.


@_compiled
def _mix(x):
    """splitmix64's finalizer, on uint64 scalars or arrays (the arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@_compiled
def _unit(x):
    """uint64 -> float64 in [0, 1) from the top 53 bits (scalars or arrays)."""
    return (x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def _doc_keys(seed: int, doc_indices: Sequence[int], key_index: int) -> np.ndarray:
    """The hash key of each document (uint64 array); a word's draws mix its position into it."""
    _jit()
    # Arrays throughout: numba would return a uint64 scalar as a Python int.
    seed_key = _mix(np.array([seed & _MASK64], dtype=np.uint64))
    docs = np.asarray(doc_indices, dtype=np.uint64).reshape(-1)
    return _mix(_mix(seed_key ^ docs) ^ np.uint64(key_index & _MASK64))


def word_uniforms(seed: int, doc_index: int, key_index: int, positions) -> np.ndarray:
    """The switch draw U[0,1) of each word position; a pure function of its arguments."""
    key = _doc_keys(seed, [doc_index], key_index)
    return _unit(_mix(key ^ (np.asarray(positions, dtype=np.uint64) << np.uint64(1))))


def span_keys(seed: int, sample: int, key_index: int, count: int) -> np.ndarray:
    """Hash keys of the ``count`` spans of one online-codeswitched sample (uint64 array): the
    sample plays the document's part in :func:`_doc_keys`, each span mixes in its number."""
    key = _doc_keys(seed, [sample], key_index)
    return _mix(key ^ np.arange(count, dtype=np.uint64))


def choice_uniform(seed: int, doc_index: int, key_index: int, position: int) -> float:
    """The translation draw U[0,1) of a word position (independent of the switch draw)."""
    key = _doc_keys(seed, [doc_index], key_index)
    return float(_unit(_mix(key ^ np.uint64((position << 1) | 1)))[0])


# --------------------------------------------------------------------------- compiled loops
# Finding table words and splicing in translations are loops over every token; numba compiles
# them on first use and keeps them in its cache (next to this file), which keeps codeswitching a
# few percent of the tokenizer's time.


@_compiled
def _window_hash(ids, start, length):
    h = np.uint64(0xCBF29CE484222325)  # FNV-1a over the token ids
    for j in range(length):
        h = (h ^ np.uint64(ids[start + j])) * np.uint64(0x100000001B3)
    return h


@_compiled
def _build_hash_table(flat, start, length, size):
    table = np.full(size, -1, dtype=np.int64)
    for g in range(len(length)):
        i = np.int64(_window_hash(flat, start[g], length[g]) & np.uint64(size - 1))
        while table[i] >= 0:
            i = (i + 1) & (size - 1)
        table[i] = g
    return table


@_compiled
def _lookup(table, flat, start, length, ids, at, n):
    """The form equal to ``ids[at : at + n]``, or -1."""
    i = np.int64(_window_hash(ids, at, n) & np.uint64(len(table) - 1))
    while table[i] >= 0:
        g = table[i]
        if length[g] == n:
            s = start[g]
            j = 0
            while j < n and flat[s + j] == ids[at + j]:
                j += 1
            if j == n:
                return g
        i = (i + 1) & (len(table) - 1)
    return -1


@_compiled
def _find_and_draw(ids, begins, lens, doc_keys, ratio, table, flat, start, length, spaced,
                   longest_from, lengths_from, single, starts_word, continues, ends_space,
                   n_langs, lang_base, lang_forms):
    """One pass over the documents: counts of words and eligible words per document, and the
    switched words (first token, length, combo id, document), in token order.

    Scanning left to right, the longest eligible form starting at a token is the word there;
    the scan resumes after it (words never overlap).
    """
    n_docs = len(lens)
    n_words = np.zeros(n_docs, dtype=np.int64)
    n_eligible = np.zeros(n_docs, dtype=np.int64)
    sw_start = np.empty(len(ids), dtype=np.int64)
    sw_len = np.empty(len(ids), dtype=np.int64)
    sw_combo = np.empty(len(ids), dtype=np.int64)
    sw_doc = np.empty(len(ids), dtype=np.int64)
    k = 0
    for d in range(n_docs):
        b = begins[d]
        e = b + lens[d]
        for t in range(b, e):
            n_words[d] += starts_word[ids[t]]
        t = b
        while t < e:
            g = -1
            n = min(longest_from[ids[t]], e - t)
            while n > 0:
                if lengths_from[ids[t]] & (np.uint64(1) << np.uint64(min(n, 63))):
                    g = single[ids[t]] if n == 1 else _lookup(table, flat, start, length, ids, t, n)
                    # Eligible: the next token does not continue the word; a form without its
                    # leading space only at the document start or after whitespace.
                    if g >= 0 and not (t + n < e and continues[ids[t + n]]) and (
                        spaced[g] or t == b or ends_space[ids[t - 1]]
                    ):
                        break
                    g = -1
                n -= 1
            if g < 0:
                t += 1
                continue
            n_eligible[d] += 1
            position = np.uint64(t - b) << np.uint64(1)
            if _unit(_mix(doc_keys[d] ^ position)) < ratio:
                # The translation draw: the odd counter of the same position (choice_uniform).
                scaled = _unit(_mix(doc_keys[d] ^ (position | np.uint64(1)))) * n_langs[g]
                lang = min(np.int64(scaled), n_langs[g] - 1)
                n_forms = lang_forms[g, lang]
                form = min(np.int64((scaled - lang) * n_forms), n_forms - 1)
                sw_start[k] = t
                sw_len[k] = n
                sw_combo[k] = lang_base[g, lang] + form
                sw_doc[k] = d
                k += 1
            t += n
    return n_words, n_eligible, sw_start[:k], sw_len[:k], sw_combo[:k], sw_doc[:k]


@_compiled
def _splice(ids, begins, lens, sw_start, sw_len, sw_combo, sw_doc, combo_start, combo_len,
            combo_flat, eod, with_mask):
    """The documents with the switched words' tokens replaced by their combos' ids and ``eod``
    (if >= 0) after each; the loss mask (0 on replacements) when ``with_mask``; per document the
    output length and the number of replacement tokens."""
    n_docs = len(lens)
    out_lens = lens.copy()
    replaced = np.zeros(n_docs, dtype=np.int64)
    for i in range(len(sw_start)):
        r = combo_len[sw_combo[i]]
        out_lens[sw_doc[i]] += r - sw_len[i]
        replaced[sw_doc[i]] += r
    if eod >= 0:
        out_lens += 1
    total = out_lens.sum()
    out = np.empty(total, dtype=np.int64)
    mask = np.ones(total if with_mask else 0, dtype=np.uint8)
    o = 0
    i = 0
    for d in range(n_docs):
        t = begins[d]
        e = t + lens[d]
        while i < len(sw_start) and sw_doc[i] == d:
            p = sw_start[i]
            out[o : o + p - t] = ids[t:p]
            o += p - t
            s = combo_start[sw_combo[i]]
            r = combo_len[sw_combo[i]]
            out[o : o + r] = combo_flat[s : s + r]
            if with_mask:
                mask[o : o + r] = 0
            o += r
            t = p + sw_len[i]
            i += 1
        out[o : o + e - t] = ids[t:e]
        o += e - t
        if eod >= 0:
            out[o] = eod
            o += 1
    return out, out_lens, mask, replaced


@dataclass
class SwitchStats:
    """Counts for one document (summed by the tools for their summaries)."""

    words: int = 0  # word-start tokens (a cheap proxy for the number of words)
    eligible: int = 0
    switched: int = 0
    masked_tokens: int = 0

    def add(self, other: "SwitchStats") -> None:
        self.words += other.words
        self.eligible += other.eligible
        self.switched += other.switched
        self.masked_tokens += other.masked_tokens


@dataclass
class SwitchedBatch:
    """Several processed documents back to back, as numpy arrays (cheap to pickle and write)."""

    ids: np.ndarray  # int64, all documents concatenated
    lengths: np.ndarray  # int64, tokens per document
    mask: Optional[np.ndarray]  # uint8 like ``ids``; None = all ones
    words: np.ndarray  # per-document counts (int64), as in SwitchStats
    eligible: np.ndarray
    switched: np.ndarray
    masked_tokens: np.ndarray

    @classmethod
    def build(cls, ids, lengths, mask, words, eligible, switched, masked_tokens, eod=None):
        if eod is not None:  # one EOD after every document; it stays a prediction target
            at = np.cumsum(lengths)
            ids = np.insert(ids, at, eod)
            if mask is not None:
                mask = np.insert(mask, at, np.uint8(1))
            lengths = lengths + 1
        return cls(ids, lengths, mask, words, eligible, switched, masked_tokens)

    def doc_stats(self, d: int) -> SwitchStats:
        return SwitchStats(
            int(self.words[d]), int(self.eligible[d]), int(self.switched[d]), int(self.masked_tokens[d])
        )

    def total_stats(self) -> SwitchStats:
        return SwitchStats(
            int(self.words.sum()), int(self.eligible.sum()), int(self.switched.sum()),
            int(self.masked_tokens.sum()),
        )


@dataclass
class _Choices:
    """Translations of one table word in the requested languages (language order kept)."""

    forms: List[List[str]]  # per language
    ids: List[Optional[List[List[int]]]]  # per language: token-id forms, or None for strings
    word_ids: Tuple[int, ...]  # the word's own running-text tokens (lower case, with the space)


@dataclass
class _Match:
    choices: _Choices
    casing: str  # "lower" | "title" | "upper"
    spaced: bool  # the running-text form with its leading space
    ids: Tuple[int, ...]  # the tokens of this spelling


def _apply_case(form: str, casing: str) -> str:
    if casing == "upper":
        return form.upper()
    if casing == "title":
        return form[:1].upper() + form[1:]
    return form


class _Forms:
    """Every registered token-id form (a spelling of a table word), for the compiled scan.

    Form ``g`` is ``flat[start[g] : start[g] + length[g]]``; ``table`` is an open-addressing hash
    table of form indices (-1: empty) keyed by :func:`_window_hash`, and hits are compared token by
    token, so lookups are exact for forms of any length. Every (form, language, translation) is
    a combo: ``combos[lang_base[g, lang] + translation]``.
    """

    def __init__(self, forms: Dict[Tuple[int, ...], _Match], vocab: int) -> None:
        _jit()
        matches = list(forms.values())
        sequences = list(forms)
        self.length = np.array([len(f) for f in sequences], dtype=np.int64)
        self.start = np.cumsum(self.length) - self.length
        self.flat = np.array([i for f in sequences for i in f], dtype=np.int64)
        self.spaced = np.array([m.spaced for m in matches], dtype=bool)
        # Per token id: the longest form beginning with it (0: none) and, as bits, the lengths
        # of those forms (bit 63: any length >= 63).
        self.longest_from = np.zeros(vocab, dtype=np.int64)
        np.maximum.at(self.longest_from, self.flat[self.start], self.length)
        self.lengths_from = np.zeros(vocab, dtype=np.uint64)
        bits = np.left_shift(np.uint64(1), np.minimum(self.length, 63).astype(np.uint64))
        np.bitwise_or.at(self.lengths_from, self.flat[self.start], bits)
        self.single = np.full(vocab, -1, dtype=np.int64)  # the one-token form of each id
        one = np.flatnonzero(self.length == 1)
        self.single[self.flat[self.start[one]]] = one
        size = 1 << max(4, int(2 * len(sequences)).bit_length())  # load factor <= 1/2
        self.table = _build_hash_table(self.flat, self.start, self.length, size)
        self.combos: List[Tuple[_Match, int, int]] = []
        max_langs = max(len(m.choices.forms) for m in matches)
        self.n_langs = np.array([len(m.choices.forms) for m in matches], dtype=np.int64)
        self.lang_base = np.zeros((len(matches), max_langs), dtype=np.int64)
        self.lang_forms = np.ones((len(matches), max_langs), dtype=np.int64)
        for g, m in enumerate(matches):
            for lang, translations in enumerate(m.choices.forms):
                self.lang_base[g, lang] = len(self.combos)
                self.lang_forms[g, lang] = len(translations)
                self.combos += [(m, lang, f) for f in range(len(translations))]


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
        _jit()
        self.ratio = ratio
        self.mode = mode
        self.seed = seed
        self.encoder = encoder
        self._forms: Optional[_Forms] = None  # None: nothing to switch
        # Every spelling's token ids -> its match; a later registration of the same ids wins.
        forms: Dict[Tuple[int, ...], _Match] = {}
        # Exclusive bound of the ids an output can hold (En-Clone shifts apply to any token).
        self.id_bound = encoder.vocab_size
        if mode == "none":
            return
        self._starts_word, self._continues, self._ends_space = encoder.token_classes()
        for entry in entries:
            choice_forms, ids = [], []
            for lang in languages:
                lang_forms = entry.translations.get(lang) or []
                if lang_forms:
                    choice_forms.append(lang_forms)
                    ids.append(entry.token_ids.get(lang))
            if not choice_forms:
                continue
            word = normalize_word(entry.word)
            choices = _Choices(choice_forms, ids, tuple(encoder.form_ids(word)))
            for id_forms in filter(None, ids):
                for form in id_forms:
                    shift = self._clone_shift(choices.word_ids, np.asarray(form, dtype=np.int64))
                    bound = encoder.vocab_size + shift if shift is not None else max(form, default=-1) + 1
                    self.id_bound = max(self.id_bound, bound)
            # UPPER first, so that for one-letter words the Capitalised reading wins.
            for variant, casing in (
                (word.upper(), "upper"),
                (word[:1].upper() + word[1:], "title"),
                (word, "lower"),
            ):
                spaced = tuple(encoder.form_ids(variant))
                plain = tuple(int(i) for i in encoder.encode(variant))
                if spaced:
                    forms[spaced] = _Match(choices, casing, True, spaced)
                if plain and plain != spaced:
                    forms[plain] = _Match(choices, casing, False, plain)
        if not forms:  # no table word in the requested languages
            return
        self._forms = _Forms(forms, len(self._starts_word))
        # Replacement ids of the combos used so far, back to back: combo c's are
        # _combo_flat[_combo_start[c] : _combo_start[c] + _combo_len[c]] (start -1: not yet).
        n_combos = len(self._forms.combos)  # their replacement ids are tokenized on first use
        self._combo_start = np.full(n_combos, -1, dtype=np.int64)
        self._combo_len = np.zeros(n_combos, dtype=np.int64)
        self._combo_flat = np.zeros(0, dtype=np.int64)
        # Compile the kernels here, once (numba keeps them in its on-disk cache; forked workers
        # inherit them): one document holding one table word, switched.
        first = self._forms.flat[: self._forms.length[0]]
        self.ratio = 1.0
        self.process_batch([""], [0], encoded=(first, np.array([len(first)])), eod=0)
        self.ratio = ratio

    def process_batch(
        self,
        texts: Sequence[str],
        doc_indices: Sequence[int],
        key_index: int = 0,
        eod: Optional[int] = None,
        encoded: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    ) -> "SwitchedBatch":
        """Several documents back to back (what the preprocessing workers send to the writer).

        Same tokens, masks and counts for each document as when it is given alone; ``eod`` (if
        given) is appended to every document with mask 1. ``encoded`` may give the documents' token
        ids and lengths (:meth:`TextEncoder.encode_batch`) when they are already known.
        """
        all_ids, lens = self.encoder.encode_batch(texts) if encoded is None else encoded
        n_docs = len(lens)
        zeros = np.zeros(n_docs, dtype=np.int64)
        if self._forms is None or self.ratio == 0.0 or not n_docs:
            return SwitchedBatch.build(all_ids, lens, None, zeros, zeros, zeros, zeros, eod)
        begins = np.cumsum(lens) - lens
        forms = self._forms
        n_words, n_eligible, sw_starts, sw_lens, combos, sw_doc = _find_and_draw(
            all_ids, begins, lens, _doc_keys(self.seed, doc_indices, key_index), float(self.ratio),
            forms.table, forms.flat, forms.start, forms.length, forms.spaced, forms.longest_from,
            forms.lengths_from, forms.single, self._starts_word, self._continues, self._ends_space,
            forms.n_langs, forms.lang_base, forms.lang_forms,
        )
        if not len(combos):
            return SwitchedBatch.build(all_ids, lens, None, n_words, n_eligible, zeros, zeros, eod)
        new = np.unique(combos[self._combo_start[combos] < 0])
        if new.size:
            self._add_combos(new.tolist())
        masked = self.mode == "input-only"
        out, out_lens, mask, rep_per_doc = _splice(
            all_ids, begins, lens, sw_starts, sw_lens, combos, sw_doc, self._combo_start,
            self._combo_len, self._combo_flat, -1 if eod is None else int(eod), masked,
        )
        n_switched = np.bincount(sw_doc, minlength=n_docs)
        return SwitchedBatch(
            out, out_lens, mask if masked else None, n_words, n_eligible, n_switched,
            rep_per_doc if masked else zeros,
        )

    def switch_token_spans(
        self, ids: np.ndarray, lens: np.ndarray, span_keys: np.ndarray, first: int = 0
    ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Codeswitch already tokenized spans (online codeswitching, :mod:`.online_codeswitch`).

        ``ids``: the spans back to back (each one document or a cut of one, EOD included); the
        same rules as :meth:`process_batch` apply, with span ``s`` drawing from ``span_keys[s]``
        instead of a document's key. Words starting before token ``first`` are left as they are
        (context tokens). Returns (ids, per-span lengths, loss mask or None: all ones / nothing
        switched / ``original`` mode).
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        if self._forms is None or self.ratio == 0.0 or not len(lens):
            return ids, lens, None
        begins = np.cumsum(lens) - lens
        forms = self._forms
        _, _, sw_starts, sw_lens, combos, sw_doc = _find_and_draw(
            ids, begins, lens, np.asarray(span_keys, dtype=np.uint64), float(self.ratio),
            forms.table, forms.flat, forms.start, forms.length, forms.spaced, forms.longest_from,
            forms.lengths_from, forms.single, self._starts_word, self._continues, self._ends_space,
            forms.n_langs, forms.lang_base, forms.lang_forms,
        )
        keep = sw_starts >= first
        sw_starts, sw_lens, combos, sw_doc = sw_starts[keep], sw_lens[keep], combos[keep], sw_doc[keep]
        if not len(combos):
            return ids, lens, None
        new = np.unique(combos[self._combo_start[combos] < 0])
        if new.size:
            self._add_combos(new.tolist())
        masked = self.mode == "input-only"
        out, out_lens, mask, _ = _splice(
            ids, begins, lens, sw_starts, sw_lens, combos, sw_doc, self._combo_start,
            self._combo_len, self._combo_flat, -1, masked,
        )
        return out, out_lens, mask if masked else None

    def _add_combos(self, combos: List[int]) -> None:
        """Tokenize the replacements of (spelling, language, translation) combos used first now."""
        reps = [self._combo(c) for c in combos]
        lengths = np.array([len(r) for r in reps], dtype=np.int64)
        self._combo_start[combos] = len(self._combo_flat) + np.cumsum(lengths) - lengths
        self._combo_len[combos] = lengths
        self._combo_flat = np.concatenate([self._combo_flat, *reps])

    def _combo(self, combo: int) -> np.ndarray:
        """Replacement ids of a (spelling, language, translation) combination."""
        match, lang_idx, form_idx = self._forms.combos[combo]
        id_forms = match.choices.ids[lang_idx]
        if id_forms is not None:
            ids = np.asarray(id_forms[form_idx], dtype=np.int64)
            shift = self._clone_shift(match.choices.word_ids, ids)
            if shift is not None:  # En-Clone: the clone of this very spelling
                return np.asarray(match.ids, dtype=np.int64) + shift
            return ids
        form = _apply_case(match.choices.forms[lang_idx][form_idx], match.casing)
        ids = self.encoder.form_ids(form) if match.spaced else self.encoder.encode(form)
        return np.asarray(ids, dtype=np.int64)

    def _clone_shift(self, word_ids: Tuple[int, ...], form: np.ndarray) -> Optional[int]:
        """``k`` when a token-id form is the word's own tokens shifted by a constant ``k`` beyond
        the tokenizer's vocabulary (an En-Clone form), else None. Then every spelling of the
        word ("Bank", "BANK", no-space forms) is switched to the clone of its own tokens; other
        token-id forms cannot follow the casing and are inserted as given."""
        if len(form) != len(word_ids) or not len(form):
            return None
        shifts = form - np.asarray(word_ids, dtype=np.int64)
        k = int(shifts[0])
        return k if k >= self.encoder.vocab_size and bool((shifts == k).all()) else None
