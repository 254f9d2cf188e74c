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

Preprocessing finds the same words with :data:`WORD_PATTERN` directly (a regex split is much
faster than NLTK and gives identical word strings on ordinary text, see tests/test_data_words.py).
"""

from __future__ import annotations

import re
from typing import Iterator

from nltk.tokenize import NLTKWordTokenizer

# [^\W_] is "a letter or digit" in any script; hyphen-joined parts stay one word like in NLTK.
WORD_PATTERN = r"[^\W_]+(?:-[^\W_]+)*"
WORD_RE = re.compile(WORD_PATTERN)
_WORD_FULL_RE = re.compile(WORD_PATTERN + r"\Z")
_HAS_LETTER_RE = re.compile(r"[^\W\d_]")

_NLTK = NLTKWordTokenizer()


def is_word(token: str) -> bool:
    """True when ``token`` is a word in the sense of this module (see the module docstring)."""
    return bool(_WORD_FULL_RE.match(token)) and bool(_HAS_LETTER_RE.search(token))


def normalize_word(word: str) -> str:
    """The table key of a word: stripped and lower-cased."""
    return word.strip().lower()


def count_words(text: str) -> Iterator[str]:
    """Yield the normalised words of ``text`` as NLTK tokenizes them (for frequency counting)."""
    for token in _NLTK.tokenize(text):
        if token.endswith(".") and token.count(".") == 1:
            token = token[:-1]
        if is_word(token):
            yield token.lower()
