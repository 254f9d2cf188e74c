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

Finding words in token ids is vectorised with numpy (forms of up to a few tokens are packed into
one int64 key), which keeps codeswitching within a few percent of plain tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.alignment_table import TableEntry
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.words import normalize_word

CODESWITCH_MODES = ("input-only", "original", "none")

_MASK64 = (1 << 64) - 1


def _splitmix64_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, as splitmix64 needs.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _doc_key(seed: int, doc_index: int, key_index: int) -> int:
    return _splitmix64_int(_splitmix64_int(_splitmix64_int(seed & _MASK64) ^ doc_index) ^ key_index)


def _doc_keys(seed: int, doc_indices: Sequence[int], key_index: int) -> np.ndarray:
    """:func:`_doc_key` of many documents (uint64 array), bit-identical."""
    base = np.uint64(_splitmix64_int(seed & _MASK64))
    docs = np.asarray(doc_indices, dtype=np.uint64).reshape(-1)
    return _splitmix64_array(_splitmix64_array(base ^ docs) ^ np.uint64(key_index & _MASK64))


def _to_unit(draws: np.ndarray) -> np.ndarray:
    """uint64 -> float64 in [0, 1) from the top 53 bits."""
    return (draws >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def word_uniforms(seed: int, doc_index: int, key_index: int, positions) -> np.ndarray:
    """The switch draw U[0,1) of each word position; a pure function of its arguments."""
    base = np.uint64(_doc_key(seed, doc_index, key_index))
    return _to_unit(_splitmix64_array(base ^ (np.asarray(positions, dtype=np.uint64) << np.uint64(1))))


def choice_uniform(seed: int, doc_index: int, key_index: int, position: int) -> float:
    """The translation draw U[0,1) of a word position (independent of the switch draw)."""
    x = _splitmix64_int(_doc_key(seed, doc_index, key_index) ^ ((position << 1) | 1))
    return (x >> 11) * (1.0 / 9007199254740992.0)


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


class _FormIndex:
    """Token-id forms of one length L, packed into int64 keys for vectorised lookup."""

    def __init__(self, length: int, vocab: int) -> None:
        self.length = length
        self.exact = vocab**length < 2**63  # else keys are hashes and hits are re-checked
        self.vocab = vocab
        self.by_key: Dict[int, Tuple[Tuple[int, ...], _Match]] = {}
        self.keys = np.zeros(0, dtype=np.int64)
        self.spaced = np.zeros(0, dtype=bool)
        self.matches: List[Tuple[Tuple[int, ...], _Match]] = []

    def keys_at(self, ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Keys of the windows ``ids[s : s + L]`` for each start s."""
        if self.exact:
            k = ids[starts]
            for j in range(1, self.length):
                k = k * self.vocab + ids[starts + j]
            return k
        k = np.zeros(len(starts), dtype=np.uint64)
        for j in range(self.length):  # FNV-style mixing, wrapping in uint64
            k = (k ^ ids[starts + j].astype(np.uint64)) * np.uint64(0x100000001B3)
        return k.view(np.int64)

    def add(self, ids: Tuple[int, ...], match: _Match) -> None:
        key = int(self.keys_at(np.asarray(ids, dtype=np.int64), np.zeros(1, dtype=np.int64))[0])
        self.by_key[key] = (ids, match)

    def freeze(self) -> None:
        order = sorted(self.by_key)
        self.keys = np.array(order, dtype=np.int64)
        self.matches = [self.by_key[k] for k in order]
        self.spaced = np.array([m.spaced for _, m in self.matches], dtype=bool)
        self.first = np.zeros(self.vocab, dtype=bool)  # first tokens of this length's forms
        self.first[[form[0] for form, _ in self.matches]] = True
        if self.length == 1:  # direct table: token id -> slot (-1: not a form)
            self.dense = np.full(self.vocab, -1, dtype=np.int64)
            self.dense[[form[0] for form, _ in self.matches]] = np.arange(len(self.matches))

    def lookup(self, ids: np.ndarray, starts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(starts whose window is a registered form, index of that form in ``matches``)."""
        if self.length == 1:
            slot = self.dense[ids[starts]]
            hit = slot >= 0
            return starts[hit], slot[hit]
        keys = self.keys_at(ids, starts)
        slot = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[slot] == keys
        return starts[hit], slot[hit]


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
        self._index: Dict[int, _FormIndex] = {}
        # Exclusive bound of the ids an output can hold (En-Clone shifts apply to any token).
        self.id_bound = encoder.vocab_size
        if mode == "none":
            return
        self._starts_word, self._continues, self._ends_space = encoder.token_classes()
        vocab = len(self._starts_word)
        for entry in entries:
            forms, ids = [], []
            for lang in languages:
                lang_forms = entry.translations.get(lang) or []
                if lang_forms:
                    forms.append(lang_forms)
                    ids.append(entry.token_ids.get(lang))
            if not forms:
                continue
            word = normalize_word(entry.word)
            choices = _Choices(forms, ids, tuple(encoder.form_ids(word)))
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
                self._register(spaced, _Match(choices, casing, True, spaced), vocab)
                if plain and plain != spaced:
                    self._register(plain, _Match(choices, casing, False, plain), vocab)
        self._multi_first = None
        # Every (matched spelling, language, translation) gets a combo id; its replacement ids
        # are tokenized on first use. Per form index: combo id = lang_base[slot, lang] + form.
        self._combos: List[Tuple[_Match, int, int]] = []
        for length, index in self._index.items():
            index.freeze()
            n_slots = len(index.matches)
            max_langs = max(len(m.choices.forms) for _, m in index.matches)
            index.n_langs = np.array([len(m.choices.forms) for _, m in index.matches], dtype=np.int64)
            index.lang_base = np.zeros((n_slots, max_langs), dtype=np.int64)
            index.lang_forms = np.ones((n_slots, max_langs), dtype=np.int64)
            for slot, (_, m) in enumerate(index.matches):
                for lang_idx, forms in enumerate(m.choices.forms):
                    index.lang_base[slot, lang_idx] = len(self._combos)
                    index.lang_forms[slot, lang_idx] = len(forms)
                    self._combos += [(m, lang_idx, f) for f in range(len(forms))]
            if length > 1:
                if self._multi_first is None:
                    self._multi_first = np.zeros(vocab, dtype=bool)
                self._multi_first |= index.first

        # Replacement ids of the combos used so far, back to back: combo c's are
        # _combo_flat[_combo_start[c] : _combo_start[c] + _combo_len[c]] (start -1: not yet).
        self._combo_start = np.full(len(self._combos), -1, dtype=np.int64)
        self._combo_len = np.zeros(len(self._combos), dtype=np.int64)
        self._combo_flat = np.zeros(0, dtype=np.int64)

    def _register(self, ids: Tuple[int, ...], match: _Match, vocab: int) -> None:
        if not ids:
            return
        index = self._index.get(len(ids))
        if index is None:
            index = self._index[len(ids)] = _FormIndex(len(ids), vocab)
        index.add(ids, match)

    def find_words(
        self, ids: np.ndarray, doc_begins: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Eligible table words in ``ids`` as arrays (start, length, slot), sorted by start and
        non-overlapping; ``match(length, slot)`` gives the word's translations.

        ``ids`` are several documents back to back, ``doc_begins`` their first tokens (words
        never cross them). Working on many documents at once keeps the number of numpy calls per
        document small.
        """
        n = len(ids)
        # Token t begins a document (t == n: the end); one lookup per candidate for any bound.
        begins_doc = np.zeros(n + 1, dtype=bool)
        begins_doc[doc_begins] = True
        begins_doc[n] = True
        found_parts = []  # (starts, length, slots) of each form length, on candidates only
        multi_starts = np.flatnonzero(self._multi_first[ids]) if self._multi_first is not None else None
        for length in sorted(self._index):
            index = self._index[length]
            if length == 1:
                starts = np.flatnonzero(index.first[ids])
            else:  # one pass over all tokens for every multi-token length together
                starts = multi_starts[index.first[ids[multi_starts]]]
                starts = starts[starts <= n - length]
            for inside in range(1, length):  # the form's tokens lie in one document
                starts = starts[~begins_doc[starts + inside]]
            if not starts.size:
                continue
            starts, slot = index.lookup(ids, starts)
            after = starts + length
            ok = begins_doc[after]
            ok[~ok] = ~self._continues[ids[after[~ok]]]
            # Forms without the leading space only at the start or after whitespace.
            plain = ~index.spaced[slot]
            if plain.any():
                prev_ok = np.ones(len(starts), dtype=bool)
                inner = plain & ~begins_doc[starts]
                prev_ok[inner] = self._ends_space[ids[starts[inner] - 1]]
                ok &= prev_ok
            found_parts.append((starts[ok], length, slot[ok]))
        if not found_parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        starts = np.concatenate([f for f, _, _ in found_parts])
        lengths = np.concatenate([np.full(len(f), length, dtype=np.int64) for f, length, _ in found_parts])
        slots = np.concatenate([sl for _, _, sl in found_parts])
        if len(found_parts) > 1:  # by start; at a start the longest form wins
            order = np.lexsort((lengths, starts))
            starts, lengths, slots = starts[order], lengths[order], slots[order]
            last = np.ones(len(starts), dtype=bool)
            last[:-1] = starts[1:] != starts[:-1]
            starts, lengths, slots = starts[last], lengths[last], slots[last]
        suspicious = np.zeros(len(starts), dtype=bool)
        suspicious[1:] = starts[1:] < starts[:-1] + lengths[:-1]  # overlaps (not for single words)
        for length, index in self._index.items():
            if not index.exact:  # long forms are keyed by a hash: confirm those hits
                suspicious |= lengths == length
        if suspicious.any():
            keep, end = [], 0
            for i, (p, length, slot) in enumerate(zip(starts.tolist(), lengths.tolist(), slots.tolist())):
                form = self._index[length].matches[slot][0]
                if p >= end and tuple(ids[p : p + length].tolist()) == form:
                    keep.append(i)
                    end = p + length
            starts, lengths, slots = starts[keep], lengths[keep], slots[keep]
        return starts, lengths, slots

    def match(self, length: int, slot: int) -> _Match:
        return self._index[length].matches[slot][1]

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
        if self.mode == "none" or self.ratio == 0.0 or not n_docs:
            return SwitchedBatch.build(all_ids, lens, None, zeros, zeros, zeros, zeros, eod)
        ends = np.cumsum(lens)
        begins = ends - lens
        starts, lengths, slots = self.find_words(all_ids, begins)
        word_doc = np.repeat(np.arange(n_docs), lens)[starts]
        keys = _doc_keys(self.seed, doc_indices, key_index)
        rel = (starts - begins[word_doc]).astype(np.uint64)
        draws = _splitmix64_array(keys[word_doc] ^ (rel << np.uint64(1)))
        switched = _to_unit(draws) < self.ratio
        n_words = zeros.copy()  # word-start tokens per document (reduceat needs non-empty ones)
        nonempty = lens > 0
        n_words[nonempty] = np.add.reduceat(self._starts_word[all_ids], begins[nonempty], dtype=np.int64)
        n_eligible = np.bincount(word_doc, minlength=n_docs)
        sw = np.flatnonzero(switched)
        if not sw.size:
            return SwitchedBatch.build(all_ids, lens, None, n_words, n_eligible, zeros, zeros, eod)
        sw_doc = word_doc[sw]
        n_switched = np.bincount(sw_doc, minlength=n_docs)
        # The translation draw: the odd counter of the same position (see choice_uniform).
        choice = _to_unit(_splitmix64_array(keys[sw_doc] ^ ((rel[sw] << np.uint64(1)) | np.uint64(1))))
        sw_starts, sw_lens = starts[sw], lengths[sw]
        combos = np.zeros(len(sw), dtype=np.int64)
        for length, index in self._index.items():
            here = np.flatnonzero(sw_lens == length)
            if not here.size:
                continue
            slot = slots[sw[here]]
            scaled = choice[here] * index.n_langs[slot]
            lang = np.minimum(scaled.astype(np.int64), index.n_langs[slot] - 1)
            n_forms = index.lang_forms[slot, lang]
            form = np.minimum(((scaled - lang) * n_forms).astype(np.int64), n_forms - 1)
            combos[here] = index.lang_base[slot, lang] + form
        new = np.unique(combos[self._combo_start[combos] < 0])
        if new.size:
            self._add_combos(new.tolist())
        rep_lens = self._combo_len[combos]
        # Delete the switched words' tokens, insert the replacements (and the EODs): every token
        # is scattered once to its output position, all documents at once.
        n, extra = len(all_ids), int(eod is not None)
        word_tokens = _concat_ranges(sw_starts, sw_lens)
        keep = np.ones(n, dtype=bool)
        keep[word_tokens] = False
        # shift[t]: how far token t moves: growth by switched words before it, one EOD per
        # earlier document.
        shift = np.zeros(n + 1, dtype=np.int64)
        shift[sw_starts + 1] = rep_lens - sw_lens
        if extra:
            np.add.at(shift, begins[1:], 1)  # begins may repeat (documents without tokens)
        np.cumsum(shift, out=shift)
        pos = np.arange(n, dtype=np.int64)
        pos += shift[:n]
        rep_per_doc = np.bincount(sw_doc, weights=rep_lens, minlength=n_docs).astype(np.int64)
        new_lens = lens - np.bincount(sw_doc, weights=sw_lens, minlength=n_docs).astype(np.int64) + rep_per_doc
        out_lens = new_lens + extra
        out = np.empty(int(out_lens.sum()), dtype=np.int64)
        out[pos[keep]] = all_ids[keep]
        rep_first = sw_starts + shift[sw_starts]
        rep_pos = _concat_ranges(rep_first, rep_lens)
        out[rep_pos] = self._combo_flat[_concat_ranges(self._combo_start[combos], rep_lens)]
        if extra:
            out[np.cumsum(out_lens) - 1] = eod
        masked = self.mode == "input-only"
        mask_all = None
        if masked:
            mask_all = np.ones(len(out), dtype=np.uint8)
            mask_all[rep_pos] = 0
        return SwitchedBatch(
            out, out_lens, mask_all, n_words, n_eligible, n_switched, rep_per_doc if masked else zeros
        )

    def _add_combos(self, combos: List[int]) -> None:
        """Tokenize the replacements of (spelling, language, translation) combos used first now."""
        reps = [self._combo(c) for c in combos]
        lengths = np.array([len(r) for r in reps], dtype=np.int64)
        self._combo_start[combos] = len(self._combo_flat) + np.cumsum(lengths) - lengths
        self._combo_len[combos] = lengths
        self._combo_flat = np.concatenate([self._combo_flat, *reps])

    def _combo(self, combo: int) -> np.ndarray:
        """Replacement ids of a (spelling, language, translation) combination."""
        match, lang_idx, form_idx = self._combos[combo]
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
