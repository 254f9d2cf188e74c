"""tools/build_alignment_table.py on the generated corpus, checked against direct counting."""

import json
import os
import re
import sys
from collections import Counter

from megatron_prealign.data.alignment_table import read_table
from megatron_prealign.data.synthetic import CHINESE, GERMAN
from megatron_prealign.data.table_builder import read_counts

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


def test_counts_of_shards_summed_equal_one_pass(assets, tmp_path, capsys):
    """Two machines each count a share of the files (--partitions), the table is built from the
    summed counts: the same counts and the same table as one pass over all files."""
    shards = []
    with open(assets["en"], encoding="utf-8") as handle:
        lines = handle.readlines()
    for i in range(3):  # three files, split over two "machines"
        shards.append(str(tmp_path / f"en-{i}.jsonl"))
        with open(shards[-1], "w", encoding="utf-8") as out:
            out.writelines(lines[i::3])
    common = ["--dictionary", f"de={assets['dict_de']}", f"zh={assets['dict_zh']}",
              "--min-count", "20", "--no-progress"]
    one = str(tmp_path / "one.jsonl")
    assert build_alignment_table.main(["--input", *shards, "--output", one,
                                       "--save-counts", str(tmp_path / "all.tsv"), *common]) == 0
    for index in range(2):
        assert build_alignment_table.main([
            "--input", *shards, "--counts-only", "--save-counts", str(tmp_path / f"part-{index}.tsv"),
            "--partitions", "2", "--partition-index", str(index), "--no-progress"]) == 0
    parts = [str(tmp_path / f"part-{index}.tsv") for index in range(2)]
    assert read_counts(parts) == direct_counts(assets["en"]) == read_counts([str(tmp_path / "all.tsv")])
    assert read_counts(parts[:1]) != read_counts(parts[1:])  # each machine counted a share
    merged = str(tmp_path / "merged.jsonl")
    assert build_alignment_table.main(["--input-counts", str(tmp_path / "part-*.tsv"),
                                       "--output", merged, *common]) == 0
    with open(one, encoding="utf-8") as a, open(merged, encoding="utf-8") as b:
        assert a.read() == b.read()


def test_counts_bad_input_and_flag_errors(assets, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("bank\t3\nriver 4\n", encoding="utf-8")
    rc = build_alignment_table.main(["--input-counts", str(bad), "--dictionary",
                                     f"de={assets['dict_de']}", "--output", str(tmp_path / "t.jsonl")])
    assert rc == 2 and f"{bad}:2: expected 'word<TAB>count'" in capsys.readouterr().err
    assert not (tmp_path / "t.jsonl").exists()
    for argv, message in [
        (["--input", assets["en"], "--counts-only"], "--counts-only needs --save-counts"),
        (["--input", assets["en"], "--save-counts", str(tmp_path / "c.tsv")], "--dictionary and --output are required"),
        (["--input", assets["en"], "--dictionary", f"de={assets['dict_de']}", "--output",
          str(tmp_path / "t.jsonl"), "--partitions", "2", "--partition-index", "0"], "use it with --counts-only"),
    ]:
        try:
            build_alignment_table.main(argv)
        except SystemExit as exit_:
            assert exit_.code == 2
        assert message in capsys.readouterr().err


def test_slurm_array_script_counts_shares_and_builds_the_table(assets, tmp_path):
    import subprocess

    script = os.path.join(ROOT, "examples", "count_words_slurm.sbatch")
    (tmp_path / "counts").mkdir()
    table = str(tmp_path / "table.jsonl")
    env = {**os.environ, "PYTHON": sys.executable, "REPO": ROOT, "INPUT": assets["en"] + " " + assets["de"],
           "JSON_KEY": "text", "COUNTS_DIR": str(tmp_path / "counts"), "TABLE": table, "WORKERS": "1",
           "DICTIONARIES": f"de={assets['dict_de']}", "TABLE_ARGS": "--min-count 20 --max-translations 1",
           "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1", "PYTHONPATH": ROOT}
    table_job = {**env, "TABLE_JOB": "1", "PARTITIONS": "2"}
    result = subprocess.run(["bash", script], env=table_job, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "0 of 2 counts files" in result.stderr
    for task in ("0", "1"):
        result = subprocess.run(["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": task},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(["bash", script], env=table_job, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    one_pass = str(tmp_path / "one.jsonl")
    assert build_alignment_table.main([
        "--input", assets["en"], assets["de"], "--dictionary", f"de={assets['dict_de']}",
        "--min-count", "20", "--max-translations", "1", "--output", one_pass,
        "--save-counts", str(tmp_path / "one.tsv"), "--no-progress"]) == 0
    shares = [str(tmp_path / "counts" / f"part-0000{i}.tsv") for i in range(2)]
    assert read_counts(shares) == read_counts([str(tmp_path / "one.tsv")])
    with open(one_pass, encoding="utf-8") as a, open(table, encoding="utf-8") as b:
        assert a.read() == b.read() != ""
