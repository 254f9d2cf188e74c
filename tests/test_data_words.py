"""The fast word finder (corpus_words) against the definition (count_words: NLTK's tokenizer)."""

import random

import pytest

from megatron_prealign.data.words import WordFinder, corpus_words, count_words

VARIED = [
    "The well-known bank's river-side (bank) was 12 km long. Go.",
    "I can't do it; you cannot, gonna gotta wanna gimme lemme more'n d'ye 'tis 'twas.",
    'He said "bank" and \'bank\' and ``bank\'\' -- then... stop!? Yes: no, 3,000 or 3.5.',
    "state-of-the-art x-bank bank-x -bank bank- 1990s 90-year-old 4-5 a-1 1-a under_score",
    "Dr. Smith met Mr. Jones at 5 p.m. in the U.S. e.g. etc. end.",
    "Rock'n'roll isn't they'd we'll I'm you're we've O'Neil l'homme ’quoted’ «guillemets» „low“",
    "Email a@b.com #hash $5 50% A&B *star* [box] {curly} <angle> path/to/file x|y ~tilde",
    "Ünïcödé naïve café Straße İstanbul ıı ſtraße K Ⅻ ² ½ ٣ ٤",
    "银行 和 河岸。 中文,标点！ 日本語のテキスト、カタカナ。 한국어 문장입니다.",
    "हिंदी पाठ में शब्द। Русский текст, с запятыми. Ελληνικά κείμενα; עברית טקסט.",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space\x1cfile\x1dgroup\x1erecord\x1funit end",
    "GONNA Cannot GiMMe 'TIS CAN'T WON'T I'LL 'S 'sup 'n' ''",
    # letters that re's IGNORECASE equates with i / s inside the contractions NLTK splits (one
    # a text: the fast finder decides per text whether a contraction can occur)
    "x gımme y", "x GİMME y", "é 'tiſ", "é 'twaſ", "naïve 'tİs",
    '"Starts with a quote" and ends with one."',
    "trailing quote.\" trailing paren.) trailing bracket.] multiple.. dots... end.",
    "—dash–ndash‒figure―bar and ellipsis… and ¿inverted? ¡marks!",
    ":colon, start ,comma end, finally:",
    "",
    "   ",
    ".",
    "a",
]

# Characters that exercise NLTK's rules (quotes, clitics, periods, dashes, scripts, spaces).
_ALPHABET = list("aAbBsStTnNdDmMlLrReEvVoOyYgGwWhHiIcCkK0123456789") + list(
    " \n\t.,;:!?'\"`-_()[]{}<>*@#$%&/«»“”‘’„–—…ıİſK²é银ह\u093f\u0902\x1c\u00a0"
)
_PIECES = ["can", "not", "gon", "na", "'t", "is", "was", "n't", "'s", "'ll", "''", "``", "--",
           "...", "'ye", "more", "'n", "wan", "gim", "me", " ", ". ", "\n", "gİm", "gım", "'tiſ", "é"]


def _fuzz_texts(n, seed=0, max_parts=60, spaces=0.0):
    rng = random.Random(seed)
    for _ in range(n):
        parts = [" " if rng.random() < spaces else
                 rng.choice(_PIECES) if rng.random() < 0.3 else rng.choice(_ALPHABET)
                 for _ in range(rng.randint(0, max_parts))]
        yield "".join(parts)


@pytest.mark.parametrize("text", VARIED)
def test_fast_words_equal_nltk_definition_on_varied_text(text):
    assert corpus_words(text) == list(count_words(text))


def test_fast_words_equal_nltk_definition_on_random_text():
    mismatches = [t for t in _fuzz_texts(1500) if corpus_words(t) != list(count_words(t))]
    assert not mismatches, mismatches[:5]


def test_cached_pieces_give_the_definitions_words():
    # Long texts of many space-separated pieces, so that most are middle pieces taken from the
    # cache; one finder for all texts, its cache cleared every few texts (max_pieces).
    finder = WordFinder(max_pieces=64, max_piece_chars=3)  # long pieces are not kept
    texts = list(_fuzz_texts(1500, seed=1, max_parts=200, spaces=0.15))
    mismatches = [t for t in texts if finder(t) != list(count_words(t))]
    assert not mismatches, mismatches[:5]
    assert 0 < len(finder._cache) <= 64 + 200  # at most one text's pieces over the bound
    assert all(len(key) <= 3 + len(" qxzpieceqxz") for key in finder._cache)


def test_fast_words_find_words():  # the comparison above would also pass if both found nothing
    assert corpus_words("The bank's well-known banks, 12 km. Straße 银行") == [
        "the", "bank", "well-known", "banks", "km", "straße", "银行"
    ]


def test_parallel_counting_sums_to_one_pass(tmp_path):
    """The table builder's counts (fast finder, chunks in worker processes, summed) equal
    counting every line with the NLTK definition in one pass."""
    import json
    from collections import Counter

    from megatron_prealign.data.bad_input import SkipCounter
    from megatron_prealign.data.table_builder import count_corpus_words

    texts = [t for t in VARIED + list(_fuzz_texts(600, seed=1)) if t.strip()]
    files = []
    for i in range(2):  # two shards (files) of the corpus
        path = tmp_path / f"shard{i}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[i::2]), encoding="utf-8")
        files.append(str(path))
    expected = Counter(w for t in texts for w in count_words(t))
    assert sum(expected.values()) > 1000
    for workers in (1, 2):
        assert count_corpus_words(files, "text", SkipCounter(False), workers) == expected


def test_case_folding_table_covers_every_code_point():
    """The skip test of the case-insensitive NLTK patterns is complete: every character that
    their engine matches with an ASCII letter is lower-cased to it (after the fold table)."""
    import re

    from megatron_prealign.data import words

    engines = {(type(step.run.func.__self__), step.run.func.__self__.flags)
               for step in words._AFTER + words._BEFORE if step.lower_literal}
    assert engines == {(re.Pattern, re.IGNORECASE | re.UNICODE)}  # else compile below with theirs
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for letter in "abcdefghijklmnopqrstuvwxyz'":
        matched = set(re.compile(re.escape(letter), re.IGNORECASE).findall(everything))
        for char in matched:
            assert char.translate(words._FOLDS_TO_ASCII_LETTER).lower() == letter, (letter, char)
