"""tools/build_alignment_table.py on the generated corpus, checked against direct counting."""

import json
import os
import re
import sys
from collections import Counter

from megatron_prealign.data.alignment_table import read_table
from megatron_prealign.data.synthetic import CHINESE, GERMAN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from megatron_prealign.cli import build_alignment_table


def direct_counts(path):
    """Independent count: the generator only joins words with spaces, hyphens, parentheses and
    sentence punctuation, so a regex over lower-cased text finds the same words as NLTK."""
    counts = Counter()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"].lower()
            counts.update(w for w in re.findall(r"[a-z]+(?:-[a-z]+)*", text))
    return counts


def run(assets, tmp_path, *extra):
    out = str(tmp_path / "table.jsonl")
    rc = build_alignment_table.main([
        "--input", assets["en"], "--dictionary", f"de={assets['dict_de']}",
        f"zh={assets['dict_zh']}", "--output", out, "--no-progress", *extra,
    ])
    return rc, out


def test_table_and_coverage(assets, tmp_path, capsys):
    rc, out = run(assets, tmp_path, "--min-count", "20", "--max-translations", "1", "--workers", "2")
    assert rc == 0
    counts = direct_counts(assets["en"])
    frequent = {w for w, c in counts.items() if c >= 20}
    entries = read_table(out)
    expected_words = {
        w for w in frequent
        if [t for t in GERMAN.get(w, []) if t.lower() != w] or CHINESE.get(w)
    }
    assert {e.word for e in entries} == expected_words
    for e in entries:
        assert e.count == counts[e.word]
        assert all(len(forms) == 1 for forms in e.translations.values())
        if "de" in e.translations:
            assert e.translations["de"][0] == [t for t in GERMAN[e.word] if t.lower() != e.word][0]
    assert [e.count for e in entries] == sorted((e.count for e in entries), reverse=True)
    total = sum(counts.values())
    zh = sum(counts[e.word] for e in entries if "zh" in e.translations) / total
    printed = capsys.readouterr().out
    assert f"zh: {zh:7.2%}".replace("  ", " ") in printed.replace("  ", " ")
    assert f"{total} word tokens" in printed


def test_top_fraction_and_identical_translations(assets, tmp_path):
    rc, out = run(assets, tmp_path, "--min-count", "1", "--top-fraction", "0.5", "--keep-identical")
    assert rc == 0
    counts = direct_counts(assets["en"])
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    allowed = set(ranked[: round(len(ranked) * 0.5)])
    entries = {e.word: e for e in read_table(out)}
    assert set(entries) <= allowed
    assert entries["bank"].translations["de"] == ["Bank", "Ufer"]  # identical kept on request


def test_bad_dictionary_and_skip(assets, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("bank Ufer\nriver\n", encoding="utf-8")
    rc = build_alignment_table.main(["--input", assets["en"], "--dictionary", f"de={bad}",
                                     "--output", str(tmp_path / "t.jsonl"), "--no-progress"])
    assert rc == 2 and f"{bad}:2: dictionary line without a translation" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "t.jsonl")
    rc = build_alignment_table.main(["--input", assets["en"], "--dictionary", f"de={bad}",
                                     "--output", str(tmp_path / "t.jsonl"), "--no-progress",
                                     "--skip-bad-lines", "--min-count", "1"])
    assert rc == 0 and "skipped lines: 1" in capsys.readouterr().out
    assert [e.word for e in read_table(str(tmp_path / "t.jsonl"))] == ["bank"]
