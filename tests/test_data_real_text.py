"""Real-language data: Ding dictionary quirks, table options for real dictionaries, the roff
stripper, and the Debian text extraction (skipped cleanly when the packages are missing)."""

import json
import os
from collections import Counter

import pytest

from megatron_prealign.data import debian_text
from megatron_prealign.data.dictionaries import (
    clean_ding_term,
    ding_parallel_sentences,
    parse_ding_line,
    read_dictionary,
)
from megatron_prealign.data.table_builder import ENGLISH_STOPWORDS, build_entries

# Verbatim lines of the Ding dictionary (trans-de-en 1.9, /usr/share/trans/de-en).
DING_LINES = [
    "# Version :: devel 2023-01-30",
    "Aalbestand {m} | Aalbestände {pl} :: eel stock | eel stocks",
    "Abfahrt {f} /Abf./; Abflug {m} [transp.] | Abfahrten {pl}; Abflüge {pl} | Abfahrt des Zuges"
    " | zwei Stunden vor Abfahrt/Abflug | zur Abfahrt bereitstehen :: departure /dep./ | departures"
    " | train departure | two hours before departure/prior to departure | to be ready to depart",
    "Abgrund {m} | Abgründe {pl} | sich am Rande eines Abgrundes befinden | am Rande des Abgrunds"
    " stehen :: precipice | precipices | to be on the edge of a precipice | to stand on the edge of"
    " a precipice",
    "Datei {f} [comp.] | Dateien {pl} :: file | files",
    "Akte {f}; Akt {m} [Ös.] | Akten {pl} :: file; record | files; records",
    "laufen; rennen {vi} | laufend; rennend :: to run | running",
    "Absicht {f}; Vorhaben {n} | Absichten {pl}; Vorhaben {pl} | Das war nicht meine Absicht. ::"
    " intention | intentions | Such was not my intention.",
    "A {n}; Ais {n} [mus.] | A-Dur {n} :: A; A sharp | A major",
    "Westen {m} | ist :: west | is",
]


@pytest.fixture()
def ding_file(tmp_path):
    path = tmp_path / "de-en"
    path.write_text("\n".join(DING_LINES) + "\n", encoding="utf-8")
    return str(path)


def test_ding_terms_lose_annotations_and_multiword_entries():
    assert clean_ding_term("Abfahrt {f} /Abf./", english=False) == "Abfahrt"
    assert clean_ding_term(" Abflug {m} [transp.] ", english=False) == "Abflug"
    assert clean_ding_term("Akt {m} [Ös.]", english=False) == "Akt"  # capitalised noun kept
    assert clean_ding_term("to run", english=True) == "run"
    assert clean_ding_term("eel stock", english=True) is None  # multi-word
    assert clean_ding_term("sich am Rande eines Abgrundes befinden", english=False) is None
    assert clean_ding_term("departure /dep./", english=True) == "departure"


def test_ding_senses_and_synonyms_pair_by_position():
    pairs = dict(parse_ding_line(DING_LINES[2]))
    assert pairs["departure"] == ["Abfahrt", "Abflug"]  # ";" synonyms, file order
    assert pairs["departures"] == ["Abfahrten", "Abflüge"]  # second "|" sense: the plurals
    assert parse_ding_line(DING_LINES[0]) == []  # comment
    assert dict(parse_ding_line(DING_LINES[6]))["run"] == ["laufen", "rennen"]


def test_read_dictionary_detects_ding(ding_file):
    dictionary = read_dictionary(ding_file)
    assert dictionary["file"] == ["Datei", "Akte", "Akt"]  # file order of the real file
    assert dictionary["precipices"] == ["Abgründe"]
    assert "eel stock" not in dictionary and "a sharp" not in dictionary
    assert dictionary["a"] == ["A", "Ais"]  # the poor entry a stop-word filter removes


def test_ding_parallel_sentences(ding_file):
    assert ding_parallel_sentences(ding_file) == [("Such was not my intention.", "Das war nicht meine Absicht.")]


def test_table_options_for_real_dictionaries(ding_file):
    dictionary = read_dictionary(ding_file)
    words = ["file", "a", "is", "run", "departure"]
    counts = Counter({w: 10 for w in words})
    german = Counter({"akte": 2, "datei": 50, "abflug": 7, "abfahrt": 3, "westen": 1})
    # "A" is dropped as identical to "a" (case-insensitive); "Ais" (A sharp) is the poor rest
    plain = {e.word: e.translations["de"] for e in build_entries(words, counts, {"de": dictionary}, 2)}
    assert plain["file"] == ["Datei", "Akte"] and plain["a"] == ["Ais"] and plain["is"] == ["ist"]
    entries = build_entries(words, counts, {"de": dictionary}, max_translations=1,
                            exclude_words=ENGLISH_STOPWORDS, target_counts={"de": german},
                            min_target_count=2)
    table = {e.word: e.translations["de"] for e in entries}
    # stop words gone; translations absent from the German corpus dropped; most frequent first
    assert table == {"file": ["Datei"], "departure": ["Abflug"]}


def test_build_alignment_table_tool_with_target_corpus(ding_file, tmp_path, capsys):
    from megatron_prealign.cli import build_alignment_table

    en = tmp_path / "en.jsonl"
    en.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                          ["The file is a file.", "Run the file again and run it."] * 3))
    de = tmp_path / "de.jsonl"
    de.write_text(json.dumps({"text": "Die Datei. Laufen, Datei."}) + "\n")
    out = tmp_path / "table.jsonl"
    assert build_alignment_table.main([
        "--input", str(en), "--dictionary", f"de={ding_file}", "--output", str(out),
        "--min-count", "2", "--exclude-stopwords", "--target-corpus", f"de={de}",
        "--max-translations", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["word"]: r["translations"]["de"] for r in rows} == {"file": ["Datei"], "run": ["laufen"]}
    assert build_alignment_table.main([
        "--input", str(en), "--dictionary", f"de={ding_file}", "--output", str(out),
        "--target-corpus", f"fr={de}", "--no-progress"]) == 2
    assert "--target-corpus" in capsys.readouterr().err


def test_roff_to_text():
    source = "\n".join([
        '.\\" a comment', ".TH LS 1", ".SH NAME", "ls \\- list directory contents", ".SH BESCHREIBUNG",
        "Listet \\fBInformationen\\fR \\(em über \\fIDateien\\fP auf.", ".TP", ".B \\-a",
        "zeigt auch versteckte Dateien\\[u00E4]", ".TS", "tab; l.", "x\ty", ".TE", ".PP",
        "Gr\\(:o\\(sse: \\*(lqOK\\*(rq",
    ])
    text = debian_text.roff_to_text(source)
    assert text.split("\n\n") == [
        "NAME", "ls - list directory contents", "BESCHREIBUNG",
        "Listet Informationen — über Dateien auf.", "-a zeigt auch versteckte Dateienä",
        "Größe: “OK”"]
    assert debian_text.man_name_line(text) == "list directory contents"


def test_missing_packages_message(monkeypatch):
    monkeypatch.setattr(debian_text, "DING_PATH", "/nonexistent/de-en")
    monkeypatch.setattr(debian_text, "man_page_files", lambda language, root="": [])
    with pytest.raises(debian_text.MissingPackagesError, match="trans-de-en.*apt-get|apt-get.*trans-de-en"):
        debian_text.check_installed()


def test_extract_tool_exit_status_without_packages(monkeypatch, tmp_path, capsys):
    from megatron_prealign.cli import extract_debian_text

    monkeypatch.setattr(debian_text, "DING_PATH", "/nonexistent/de-en")
    assert extract_debian_text.main(["--output-dir", str(tmp_path / "x")]) == 2
    assert "trans-de-en" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x" / "en_train.jsonl")
