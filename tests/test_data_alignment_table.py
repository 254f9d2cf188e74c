"""Alignment table, dictionaries and word rules."""

import json
import re

import pytest

from megatron_prealign.data.alignment_table import (
    TableEntry,
    is_held_out,
    read_table,
    split_seen_held_out,
    write_table,
)
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.dictionaries import read_dictionary
from megatron_prealign.data.words import WORD_RE, count_words, is_word
from tests.raw_lines import write_lines


def test_table_round_trip(tmp_path):
    entries = [
        TableEntry("bank", 12, {"de": ["Ufer", "Bank"], "zh": ["银行"]}),
        TableEntry("river", 3, {"enclone": ["river"]}, {"enclone": [[5, 6]]}),
    ]
    path = str(tmp_path / "t.jsonl")
    assert write_table(path, entries) == 2
    assert read_table(path) == entries
    first = json.loads(open(path, encoding="utf-8").readline())
    assert first == {"word": "bank", "count": 12, "translations": {"de": ["Ufer", "Bank"], "zh": ["银行"]}}


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "malformed JSON"),
        ('{"count": 1, "translations": {}}', "missing key: 'word'"),
        ('{"word": "x", "translations": {"d e": ["y"]}}', "bad language code"),
        ('{"word": "x", "translations": {"de": [""]}}', "bad translations"),
        ('{"word": "x", "translations": {"de": ["y"]}, "token_ids": {"de": [[1], [2]]}}', "bad token_ids"),
        ('{"word": "bank", "translations": {"de": ["y"]}}', "duplicate word"),
        (b'{"word": "\xff"}', "invalid UTF-8"),
    ],
)
def test_bad_table_lines(tmp_path, line, message):
    path = write_lines(tmp_path / "t.jsonl", ['{"word": "bank", "translations": {"de": ["Ufer"]}}', line])
    with pytest.raises(BadInputError) as info:
        read_table(path)
    assert str(info.value).startswith(f"{path}:2: {message}")
    skip = SkipCounter(True)
    assert [e.word for e in read_table(path, skip)] == ["bank"] and skip.total == 1


def test_muse_and_json_dictionaries(tmp_path):
    muse = write_lines(tmp_path / "de.txt", ["bank\tUfer", "bank Bank", "Bank Ufer", "river  Fluss", "", "the der"])
    assert read_dictionary(muse) == {"bank": ["Ufer", "Bank"], "river": ["Fluss"], "the": ["der"]}
    js = write_lines(tmp_path / "zh.jsonl", ['{"words": "bank $ 银行 $ 水岸"}', '{"src_text": "river", "tgt_text": "河"}',
                                       '{"src_text": "money", "tgt_text": "钱 $ 金钱"}'])
    assert read_dictionary(js) == {"bank": ["银行", "水岸"], "river": ["河"], "money": ["钱", "金钱"]}


@pytest.mark.parametrize(
    "lines,message",
    [
        (["bank Ufer", "river"], "dictionary line without a translation: 'river'"),
        (["bank Ufer", "river\t "], "dictionary line without a translation"),
        (['{"words": "bank $ x"}', '{"words": "river"}'], "dictionary line without a translation"),
        (['{"words": "bank $ x"}', '{"src_text": "river"}'], "missing key"),
        (['{"words": "bank $ x"}', "{oops"], "malformed JSON"),
        ([b"bank Ufer", b"river \xfe"], "invalid UTF-8"),
    ],
)
def test_bad_dictionary_lines(tmp_path, lines, message):
    path = write_lines(tmp_path / "d.txt", lines)
    with pytest.raises(BadInputError, match=re.escape(f"{path}:2: {message}")):
        read_dictionary(path)
    skip = SkipCounter(True)
    assert list(read_dictionary(path, skip)) == ["bank"] and skip.total == 1


def test_word_rules_match_nltk_counting():
    text = "The bank's well-known river-side, don't go. He paid 3.5 km (bank) U.S.A. café naïve 银行 x_y."
    assert list(count_words(text)) == [
        "the", "bank", "well-known", "river-side", "do", "go", "he", "paid", "km", "bank",
        "café", "naïve", "银行",
    ]
    # The preprocessing regex finds the same words (plus clitic remnants that are never table words).
    regex_words = [w.lower() for w in WORD_RE.findall(text) if is_word(w)]
    assert [w for w in regex_words if w not in {"s", "don", "t", "u", "a", "x", "y", "x_y"}] == [
        w for w in count_words(text) if w != "do"
    ]
    assert is_word("well-known") and not is_word("3") and not is_word("n't")


def test_held_out_split_is_stable_and_sized():
    words = [f"w{i}" for i in range(4000)]
    seen, held = split_seen_held_out(words, 0.25, seed=1)
    assert abs(len(held) / len(words) - 0.25) < 0.03
    assert sorted(seen + held) == sorted(words)
    # Adding other words does not move existing ones.
    seen2, held2 = split_seen_held_out(words + ["extra"], 0.25, seed=1)
    assert set(held) <= set(held2) and set(seen) <= set(seen2)
    assert split_seen_held_out(words, 0.25, seed=2)[1] != held
    assert not is_held_out("x", 0.0) and is_held_out("x", 1.0)
