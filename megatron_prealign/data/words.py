"""What counts as an English "word" for the alignment table and for codeswitching.

Both sides must agree, otherwise the table would count words that preprocessing can never find.

* Counting (``tools/build_alignment_table.py``) uses NLTK's Treebank-style ``NLTKWordTokenizer``,
  as the paper did, but without ``sent_tokenize`` (that needs the ``punkt`` data package, which
  we never download). Without sentence splitting NLTK leaves the period on sentence-final words
  ("go."), so a single trailing period is stripped here.
* A token is a *word* when it fully matches :data:`WORD_PATTERN`: letters/digits, optionally
  joined by hyphens ("well-known"), containing at least one letter. Punctuation, numbers and
  clitics such as "'s" / "n't" are not words.
* Words are case-folded with ``str.lower()``: the table stores lower-case English words.

Preprocessing does not look for words in the text: codeswitching finds table words in the token
ids (:mod:`megatron_prealign.data.codeswitch`), by the tokens of each word's running-text form,
and uses only :func:`normalize_word` (defined with the table format, re-exported here), so that
both sides fold case the same way.

:func:`corpus_words` (a :class:`WordFinder`) is the fast form of :func:`count_words` used for
counting (the table builder): the same words in the same order, several times faster. It replays
NLTK's own substitution patterns (taken from ``NLTKWordTokenizer`` itself, in the order of its
``tokenize``), but (1) calls the compiled patterns without NLTK's per-call timeout wrapper,
(2) skips a pattern when the text cannot contain a match (a necessary substring is absent;
patterns it does not know always run), (3) replaces the split into tokens and the per-token
checks by one regex over the tokenized text, and (4) tokenizes each distinct space-separated piece
of the text once (a cache; see :class:`WordFinder` for why that is exact). tests/test_data_words.py
compares it with NLTK on varied and random text; the comparison is what guards against a future
NLTK changing its rules.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Iterator, List, Optional, Tuple

import regex  # NLTK's regular expression engine
from nltk.tokenize import NLTKWordTokenizer

from megatron_prealign.data.alignment_table import normalize_word  # noqa: F401 (the table key)

# [^\W_] is "a letter or digit" in any script; hyphen-joined parts stay one word like in NLTK.
WORD_PATTERN = r"[^\W_]+(?:-[^\W_]+)*"
WORD_RE = re.compile(WORD_PATTERN)
_WORD_FULL_RE = re.compile(WORD_PATTERN + r"\Z")
_HAS_LETTER_RE = re.compile(r"[^\W\d_]")

_NLTK = NLTKWordTokenizer()


def is_word(token: str) -> bool:
    """True when ``token`` is a word in the sense of this module (see the module docstring)."""
    return bool(_WORD_FULL_RE.match(token)) and bool(_HAS_LETTER_RE.search(token))


def count_words(text: str) -> Iterator[str]:
    """Yield the normalised words of ``text`` as NLTK tokenizes them (for frequency counting)."""
    for token in _NLTK.tokenize(text):
        if token.endswith(".") and token.count(".") == 1:
            token = token[:-1]
        if is_word(token):
            yield token.lower()


# --------------------------------------------------------------------------- fast counting

# A token (maximal run of non-whitespace, as ``str.split``) that is a word, possibly followed by
# the single sentence-final period count_words strips; the lookahead asks for one letter.
_TOKEN_WORD_RE = re.compile(r"(?<!\S)(?=[\d-]*[^\W\d_])(" + WORD_PATTERN + r")\.?(?!\S)")
# The same where tokens are separated by spaces only (faster: the scan jumps from space to space).
_SPACED_WORD_RE = re.compile(r" (?=[\d-]*[^\W\d_])(" + WORD_PATTERN + r")\.?(?= )")

# Substrings without which an NLTK pattern (keyed by its source) cannot match; (None, literal) =
# case-insensitive: "(?i)gonna" matches only where the text, lower-cased after
# _FOLDS_TO_ASCII_LETTER, contains "gonna".
_NEEDS = {
    "([«“‘„]|[`]+)": "«“‘„`",
    r"^\"": '"',
    r"(``)": ["``"],
    r"([ \(\[{<])(\"|\'{2})": ['"', "''"],
    r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)": "'",
    r"([:,])([^\d])": ":,",
    '([^\\.])(\\.)([\\]\\)}>"\\\'»”’ ]*+)\\s*$': ".",
    '([^\\.])(\\.)([\\]\\)}>"\\\']*)\\s*$': ".",
    r"([:,])$": ":,",
    r"\.{2,}": [".."],
    r"[;@#$%&]": ";@#$%&",
    "[\\u2012-\\u2015]": "\u2012\u2013\u2014\u2015",
    r"[?!]": "?!",
    r"([^'])' ": ["' "],
    r"[*]": "*",
    r"[\]\[\(\)\{\}\<\>]": "[](){}<>",
    r"--": ["--"],
    "([»”’])": "»”’",
    r"''": ["''"],
    r'"': '"',
    r"([^' ])('[sS]|'[mM]|'[dD]|') ": ["'s", "'S", "'m", "'M", "'d", "'D", "' "],
    r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ": ["'ll", "'LL", "'re", "'RE", "'ve", "'VE",
                                                  "n't", "N'T"],
}
for _pattern, _literal in (
    (r"(?i)\b(can)(?#X)(not)\b", "cannot"), (r"(?i)\b(d)(?#X)('ye)\b", "d'ye"),
    (r"(?i)\b(gim)(?#X)(me)\b", "gimme"), (r"(?i)\b(gon)(?#X)(na)\b", "gonna"),
    (r"(?i)\b(got)(?#X)(ta)\b", "gotta"), (r"(?i)\b(lem)(?#X)(me)\b", "lemme"),
    (r"(?i)\b(more)(?#X)('n)\b", "more'n"), (r"(?i)\b(wan)(?#X)(na)(?=\s)", "wanna"),
    (r"(?i) ('t)(?#X)(is)\b", "'tis"), (r"(?i) ('t)(?#X)(was)\b", "'twas"),
):
    _NEEDS[_pattern] = (None, _literal)


# The characters that re's IGNORECASE matches with an ASCII letter but str.lower() does not turn
# into that letter ("İ".lower() is "i" + a combining dot; "ı" and "ſ" are already lower case),
# mapped to it; tests/test_data_words.py finds them by brute force over every code point.
_FOLDS_TO_ASCII_LETTER = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

# Escapes whose character sets differ between ``re`` and ``regex`` (Unicode versions, \s).
_ENGINE_DEPENDENT = re.compile(r"\\[wWsSdDbBpPNX]|\(\?[a-zA-Z]*i")


def _plain_pattern(pattern):
    r"""The compiled pattern without NLTK's per-call timeout wrapper.

    NLTK compiles with the ``regex`` engine; a pattern of literal characters only (no
    ``\w``-like classes, no case folding) means the same in the standard ``re``, which is
    faster per call, so it is compiled there."""
    if isinstance(pattern, re.Pattern):
        return pattern
    source, flags = pattern.pattern, pattern.flags
    if not _ENGINE_DEPENDENT.search(source) and not flags & re.IGNORECASE:
        try:
            return re.compile(source)
        except re.error:
            pass
    return regex.compile(source, flags)


# Patterns anchored at the end ("$") that can only match after the text's last period / in its
# last two characters: applied to that tail only (the same result, without scanning the text).
_TAIL_FROM_LAST_PERIOD = {
    '([^\\.])(\\.)([\\]\\)}>"\\\'»”’ ]*+)\\s*$', '([^\\.])(\\.)([\\]\\)}>"\\\']*)\\s*$',
}
_TAIL_LAST_TWO = {r"([:,])$"}
# regex's \s is Unicode White_Space: str.isspace() without these four, so collapsing runs of
# whitespace with str.split() is the same as NLTK's "\s+" -> " " unless one of them occurs.
_SPLIT_ONLY_SPACE = "\x1c\x1d\x1e\x1f"


# Substitutions that are plain string operations: a character class whose every match is padded
# with spaces (str.replace per character: the spaces it adds are in no class), a literal replaced
# by a literal (str.replace). Checked at import.
_PADDED_CHARS = {
    r"[;@#$%&]": ";@#$%&", "[\\u2012-\\u2015]": "\u2012\u2013\u2014\u2015", r"[?!]": "?!",
    r"[*]": "*", r"[\]\[\(\)\{\}\<\>]": "[](){}<>", "([»”’])": "»”’",
}
_LITERALS = {r"--": "--", r"''": "''", r'"': '"'}


class _Step:
    """One of NLTK's substitutions, with what lets it be skipped or run as a string operation."""

    def __init__(self, pattern, replacement: str) -> None:
        source = pattern.pattern
        needs = _NEEDS.get(source, ())
        self.lower_literal = needs[1] if isinstance(needs, tuple) and needs else None
        self.any_char = tuple(needs) if isinstance(needs, str) else None
        self.any_of = list(needs) if isinstance(needs, list) else None
        # Every literal holds a character that is not a letter or a space: one set test first.
        self.gate = tuple({c for s in self.any_of or () for c in s if not (c.isalnum() or c == " ")})
        compiled = _plain_pattern(pattern)
        sub = functools.partial(compiled.sub, replacement)
        self.run = sub
        self.kind = "sub"
        if source in _TAIL_FROM_LAST_PERIOD:  # the match starts at the character before the last "."
            self.run = lambda t: t[: max(t.rfind(".") - 1, 0)] + sub(t[max(t.rfind(".") - 1, 0):])
        elif source in _TAIL_LAST_TWO:
            self.run = lambda t: t[: max(len(t) - 2, 0)] + sub(t[max(len(t) - 2, 0):])
        elif source == r"\s+" and replacement == " ":
            self.kind = "collapse-space"
        elif source in _PADDED_CHARS and all(
            sub(c) == f" {c} " for c in _PADDED_CHARS[source]
        ) and sub("a1 .") == "a1 .":
            padded = _PADDED_CHARS[source]  # one fast str.replace per character present
            self.run = lambda t: functools.reduce(
                lambda text, c: text.replace(c, f" {c} ") if c in text else text, padded, t)
        elif source in _LITERALS and sub(_LITERALS[source]) == replacement:
            literal = _LITERALS[source]
            self.run = lambda t: t.replace(literal, replacement)


def _nltk_steps(tok: NLTKWordTokenizer) -> Tuple[List[_Step], List[_Step]]:
    """NLTK's substitutions before and after it pads the text with spaces (see its tokenize)."""
    before = [_Step(p, r) for p, r in tok.STARTING_QUOTES + tok.PUNCTUATION]
    before += [_Step(*tok.PARENS_BRACKETS), _Step(*tok.DOUBLE_DASHES)]
    after = [_Step(p, r) for p, r in tok.ENDING_QUOTES]
    after += [_Step(p, r" \1 \2 ") for p in tok.CONTRACTIONS2 + tok.CONTRACTIONS3]
    return before, after


_BEFORE, _AFTER = _nltk_steps(_NLTK)
_COLLAPSES = any(step.kind == "collapse-space" for step in _AFTER)


def _present(needles, text: str) -> bool:
    for needle in needles:  # each a fast substring search; no set of the text's characters
        if needle in text:
            return True
    return False


def _apply(steps: List[_Step], text: str, lower: Optional[str]) -> str:
    for step in steps:
        if step.any_char is not None and not _present(step.any_char, text):
            continue
        if step.any_of is not None and not (
            _present(step.gate, text) and _present(step.any_of, text)
        ):
            continue
        if step.lower_literal is not None and lower is not None and step.lower_literal not in lower:
            continue
        if step.kind == "collapse-space" and not _present(_SPLIT_ONLY_SPACE, text):
            text = " " + " ".join(text.split()) + " " if text else text
        else:
            text = step.run(text)
    return text


def _nltk_text(text: str) -> str:
    """NLTK's tokenization of ``text`` as one string (its tokens are the whitespace-separated parts)."""
    # Where a case-insensitive literal pattern can match, the folded text contains the literal.
    lower = text.lower() if text.isascii() else text.translate(_FOLDS_TO_ASCII_LETTER).lower()
    return _apply(_AFTER, " " + _apply(_BEFORE, text, lower) + " ", lower)


def _words_in(tokenized: str) -> List[str]:
    """The normalised words among the tokens of ``_nltk_text``'s output."""
    # After the str.split() collapse, tokens are separated by plain spaces only.
    spaced = _COLLAPSES and not any(c in tokenized for c in _SPLIT_ONLY_SPACE)
    finder = _SPACED_WORD_RE if spaced else _TOKEN_WORD_RE
    if tokenized.isascii():  # lower-casing maps letters to letters one to one
        return finder.findall(tokenized.lower())
    return [w.lower() for w in finder.findall(tokenized)]


def _replayed_words(text: str) -> List[str]:
    return _words_in(_nltk_text(text))


# A token no NLTK rule changes (lower-case letters, no contraction inside): it stands for the
# neighbours of a piece, and separates pieces tokenized together.
_SEPARATOR = "qxzpieceqxz"
# What may follow the period NLTK's end-of-text rules split off (their closers and \s, the same
# engine): where this does not match after the last period, those rules cannot fire.
_CLOSERS_TO_END = regex.compile(r"[\]\)}>\"'»”’\s]*\Z")


class WordFinder:
    """``list(count_words(text))``, computed many times faster (see the module docstring).

    Real text repeats its space-separated pieces ("the", "bank,", "river."), and NLTK's rules
    never look across the space between two pieces beyond the space itself, except at the start
    of the text and in the end-of-text rules. So the words of the first piece and of the tail
    that the end rules can reach are found in place, and those of every piece between from a cache
    (piece -> its words). The pieces not yet cached are tokenized in one call, separated by a
    sentinel token. Memory stays bounded whatever the corpus: pieces longer than
    ``max_piece_chars`` (rarely repeated: text without spaces, long URLs) are not kept, and the
    cache is cleared when it holds ``max_pieces`` pieces. The words do not depend on what the
    cache holds."""

    def __init__(self, max_pieces: int = 1 << 19, max_piece_chars: int = 64) -> None:
        self.max_pieces = max_pieces
        self.max_piece_chars = max_piece_chars
        self._cache: dict = {}

    def __call__(self, text: str) -> List[str]:
        pieces = text.split(" ")
        tail_start = len(pieces) - 1
        last_period = text.rfind(".")
        if last_period >= 0 and _CLOSERS_TO_END.match(text, last_period + 1):
            # The end rules' match starts at the character before the last period.
            tail_start = text.count(" ", 0, max(last_period - 1, 0))
        if tail_start < 1 or not _COLLAPSES or _SEPARATOR in text:
            return _replayed_words(text)
        middle = pieces[1:tail_start]
        missing = set(middle).difference(self._cache)
        if len(self._cache) + len(missing) > self.max_pieces:
            self._cache.clear()
            missing = set(middle)
        uncached = self._tokenize(missing) if missing else {}
        # The edges are cached too, under keys no middle piece can have (they hold a space).
        words = list(self._edge(pieces[0] + " " + _SEPARATOR, slice(None, -1)))
        if not uncached:  # every piece is in the cache
            words += itertools.chain.from_iterable(map(self._cache.__getitem__, middle))
        else:
            words += itertools.chain.from_iterable(
                uncached[p] if p in uncached else self._cache[p] for p in middle)
        words += self._edge(_SEPARATOR + " " + " ".join(pieces[tail_start:]), slice(1, None))
        return words

    def _edge(self, text: str, own_words: slice) -> Tuple[str, ...]:
        words = self._cache.get(text)
        if words is None:
            words = tuple(_replayed_words(text)[own_words])
            if len(text) <= self.max_piece_chars + len(_SEPARATOR) + 1:
                self._cache[text] = words
        return words

    def _tokenize(self, pieces) -> dict:
        """Tokenize ``pieces`` together; cache the short ones, return the others' words."""
        pieces = list(pieces)
        spaced = f" {_SEPARATOR} "
        # " S p1 S p2 S ": every piece between two spaces, as in the text. The sentinel is a word
        # of its own in NLTK's output, so the words between two sentinels are one piece's.
        words = _replayed_words(spaced + spaced.join(pieces) + spaced)
        groups = " ".join(words).split(_SEPARATOR)[1:-1]
        if len(groups) != len(pieces):  # cannot happen while the sentinel stays a token
            raise AssertionError("the piece sentinel was split or merged by the tokenizer")
        long_pieces = {}
        for piece, group in zip(pieces, groups):
            words_of_piece = tuple(group.split())
            if len(piece) <= self.max_piece_chars:
                self._cache[piece] = words_of_piece
            else:
                long_pieces[piece] = words_of_piece
        return long_pieces


corpus_words = WordFinder()
