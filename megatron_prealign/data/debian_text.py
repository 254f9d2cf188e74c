"""Real English and German text from Debian packages, offline: man pages, the Debian Reference,
fortunes, and the Ding German-English dictionary (``trans-de-en``).

Used by ``tools/extract_debian_text.py`` and the real-language demo (``megatron_prealign.demo.real``). Sources:

* **man pages** (``manpages`` + every installed English page under ``/usr/share/man/man*``;
  ``manpages-de`` under ``/usr/share/man/de/man*``): roff source read directly (gzip or plain)
  and reduced to running text by :func:`roff_to_text`, a small stripper (requests dropped,
  text-carrying macros kept, font and character escapes resolved, tables and ``.de`` macro
  bodies dropped). No ``man``/``groff`` process per page: thousands of pages in seconds.
  Symlinks and ``.so`` redirects are skipped, so each page is read once.
* **Debian Reference** (``debian-reference-en`` / ``-de``): the packaged plain-text rendering
  ``debian-reference.LANG.txt.gz``, split into paragraphs; documents are runs of paragraphs.
* **fortunes** (``fortunes-de``; ``fortunes`` for English if installed): ``%``-separated
  entries of the plain fortune files.
* **Ding** (``trans-de-en``): ``/usr/share/trans/de-en``, read by
  :func:`megatron_prealign.data.dictionaries.read_dictionary` (format ``ding``).

A document is one man page, one fortune, or up to ``PARAGRAPHS_PER_DOC`` consecutive paragraphs
of the Debian Reference; whitespace is normalised, documents shorter than ``MIN_CHARS`` dropped.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from megatron_prealign.data.atomic import atomic_text_writer
from megatron_prealign.errors import MissingPackagesError

MIN_CHARS = 80
PARAGRAPHS_PER_DOC = 8

DEBIAN_PACKAGES = {
    "en": ["manpages", "debian-reference-en"],
    "de": ["manpages-de", "debian-reference-de", "fortunes-de"],
    "dictionary": ["trans-de-en"],
}
DING_PATH = "/usr/share/trans/de-en"


def install_hint(packages: List[str]) -> str:
    apt = shutil.which("apt-get")
    command = "apt-get install -y " + " ".join(packages)
    if apt is None:
        return (f"apt-get is not available on this machine: install the Debian packages "
                f"{', '.join(packages)} (a Debian/Ubuntu system: `{command}` as root)")
    return f"install them with `{command}` (as root; run `apt-get update` first on a fresh machine)"


# ---------------------------------------------------------------------------------------------
# roff -> text

# Macros whose arguments are running text (man and mdoc); everything else starting with "." or
# "'" is a formatting request and dropped.
_TEXT_MACROS = {"SH", "SS", "TP", "IP", "B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB",
                "Nm", "Nd", "Sh", "Ss", "It", "Xr", "Ar", "Fl", "Em", "Sy", "Pa", "Dv", "Li",
                "Ql", "Dq", "Sq", "Pq", "Cm", "Ic", "Va", "Ev", "Fn", "Fa", "Ft", "Op", "Ms",
                "UR", "MT", "Lk", "Mt"}
_CHARS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘",
          "cq": "’", "hy": "-", "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×",
          "de": "°", "ti": "~", "ha": "^", "rs": "\\", "ga": "`", "sl": "/", "ss": "ß",
          ":a": "ä", ":o": "ö", ":u": "ü", ":A": "Ä", ":O": "Ö", ":U": "Ü", "Fo": "«",
          "Fc": "»", "fo": "‹", "fc": "›", "Eu": "€", "eu": "€", "<=": "≤", ">=": "≥",
          "->": "→", "<-": "←", "pl": "+", "mi": "-", "eq": "=", "ba": "|", "or": "|",
          "at": "@", "sh": "#", "Do": "$", "lB": "[", "rB": "]", "lC": "{", "rC": "}",
          "dg": "†", "ps": "¶", "sc": "§", "ct": "¢", "Po": "£", "Ye": "¥", "aa": "´"}
_ESCAPE_RE = re.compile(
    r"\\(?:"
    r"\[(?P<bracket>[^\]]*)\]"            # \[em] \[u00E4]
    r"|\((?P<paren>..)"                    # \(em
    r"|\*(?:\[(?P<strb>[^\]]*)\]|\((?P<strp>..)|(?P<strc>.))"  # \*(lq strings
    r"|f(?:\[[^\]]*\]|\(..|.)"             # fonts \fB \f(CW \f[B]
    r"|s[-+]?(?:\d+|\(\d\d|\[\d+\])"       # sizes
    r"|[kgnmMVY](?:\[[^\]]*\]|\(..|.)"     # registers, colours
    r"|[hvwlLDxXoHSbNAzZRu]'[^']*'"        # quoted-argument escapes: drop
    r"|(?P<single>.)"
    r")", re.DOTALL)
_STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "q": '"', "Lq": "“", "Rq": "”"}
_SINGLE = {"-": "-", "e": "\\", "\\": "\\", "&": "", ":": "", "c": "", "%": "", "|": "",
           "^": "", "0": " ", " ": " ", "~": " ", "t": " ", "'": "'", "`": "`", ".": ".",
           "d": "", "u": "", "r": "", "p": "", "a": "", "!": "", "{": "", "}": "", "E": "",
           "/": "", ",": "", ")": ""}


def _escape(match: re.Match) -> str:
    if match.group("bracket") is not None:
        name = match.group("bracket")
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _CHARS.get(name, "")
    if match.group("paren") is not None:
        return _CHARS.get(match.group("paren"), "")
    for group in ("strb", "strp", "strc"):
        if match.group(group) is not None:
            return _STRINGS.get(match.group(group), "")
    single = match.group("single")
    if single is not None:
        return _SINGLE.get(single, "")
    return ""


def _macro_args(rest: str) -> str:
    """Arguments of a text macro: quoted groups kept together, quotes removed."""
    parts = re.findall(r'"((?:[^"]|"")*)"|(\S+)', rest)
    return " ".join(q.replace('""', '"') if q else w for q, w in parts)


def roff_to_text(source: str) -> str:
    """Running text of a man page's roff source (paragraphs separated by blank lines)."""
    paragraphs: List[List[str]] = [[]]
    skip_until: Optional[str] = None
    for line in source.splitlines():
        if skip_until is not None:
            if line.startswith(skip_until):
                skip_until = None
            continue
        if line.startswith(('.\\"', "'\\\"", '\\"')) or line.startswith('.\\#'):
            continue
        if line.startswith((".", "'")):
            request = line[1:].lstrip()
            name, _, rest = request.partition(" ")
            if name in ("TS",):
                skip_until = ".TE"
            elif name in ("de", "de1", "am", "ig"):
                skip_until = ".."
            elif name == "EQ":
                skip_until = ".EN"
            elif name in _TEXT_MACROS and rest.strip():
                if name in ("SH", "SS", "Sh", "Ss"):
                    paragraphs.append([])
                paragraphs[-1].append(_macro_args(rest))
                if name in ("SH", "SS", "Sh", "Ss"):
                    paragraphs.append([])
            elif name in ("PP", "P", "LP", "sp", "Pp", "TP", "IP", "HP", "SH", "SS"):
                paragraphs.append([])
            continue
        paragraphs[-1].append(line)
    out = []
    for lines in paragraphs:
        text = _ESCAPE_RE.sub(_escape, " ".join(lines))
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            out.append(text)
    return "\n\n".join(out)


def _read_maybe_gzip(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def man_page_files(language: str, root: str = "/usr/share/man") -> List[str]:
    """Regular man page files (no symlinks) of ``language`` ("en": the top-level sections)."""
    base = root if language == "en" else os.path.join(root, language)
    files = sorted(glob.glob(os.path.join(base, "man[1-9]*", "*")))
    return [f for f in files if os.path.isfile(f) and not os.path.islink(f)]


def man_page_documents(language: str, root: str = "/usr/share/man", max_pages: Optional[int] = None,
                       seed: int = 1234) -> Iterator[Dict[str, str]]:
    files = man_page_files(language, root)
    if max_pages is not None and len(files) > max_pages:
        files = sorted(random.Random(seed).sample(files, max_pages))
    for path in files:
        source = _read_maybe_gzip(path)
        if source.lstrip().startswith(".so "):
            continue  # a redirect to another page
        text = roff_to_text(source)
        if len(text) >= MIN_CHARS:
            yield {"text": text, "source": "man:" + os.path.basename(path).split(".gz")[0]}


def _text_paragraphs(text: str) -> List[str]:
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if p]


def debian_reference_file(language: str) -> Optional[str]:
    for pattern in (f"/usr/share/debian-reference/debian-reference.{language}.txt.gz",
                    f"/usr/share/doc/debian-reference-{language}/docs/debian-reference.{language}.txt.gz"):
        if os.path.isfile(pattern):
            return pattern
    return None


def debian_reference_documents(language: str) -> Iterator[Dict[str, str]]:
    path = debian_reference_file(language)
    if path is None:
        return
    paragraphs = _text_paragraphs(_read_maybe_gzip(path))
    for start in range(0, len(paragraphs), PARAGRAPHS_PER_DOC):
        text = "\n\n".join(paragraphs[start:start + PARAGRAPHS_PER_DOC])
        if len(text) >= MIN_CHARS:
            yield {"text": text, "source": f"debian-reference:{start // PARAGRAPHS_PER_DOC}"}


def fortune_files(language: str, root: str = "/usr/share/games/fortunes") -> List[str]:
    base = os.path.join(root, language) if language != "en" else root
    files = []
    for path in sorted(glob.glob(os.path.join(base, "*"))):
        if os.path.isfile(path) and not os.path.islink(path) and "." not in os.path.basename(path):
            files.append(path)
    return files


def fortune_documents(language: str, root: str = "/usr/share/games/fortunes") -> Iterator[Dict[str, str]]:
    for path in fortune_files(language, root):
        text = _read_maybe_gzip(path)
        for index, entry in enumerate(re.split(r"^%\s*$", text, flags=re.MULTILINE)):
            entry = re.sub(r"[ \t]+", " ", entry).strip()
            if len(entry) >= MIN_CHARS // 2:
                yield {"text": entry, "source": f"fortune:{os.path.basename(path)}:{index}"}


@dataclass
class SourceCount:
    name: str
    documents: int = 0
    chars: int = 0


def language_documents(language: str, counts: Optional[Dict[str, SourceCount]] = None,
                       max_man_pages: Optional[int] = None, seed: int = 1234) -> Iterator[Dict[str, str]]:
    """All documents of ``language`` ("en" or "de") from the installed packages, in a fixed order
    (``max_man_pages``: a seeded sample of the man page files, for quick runs)."""
    sources = (("man pages", man_page_documents(language, max_pages=max_man_pages, seed=seed)),
               ("Debian Reference", debian_reference_documents(language)),
               ("fortunes", fortune_documents(language)))
    for name, documents in sources:
        for document in documents:
            if counts is not None:
                count = counts.setdefault(name, SourceCount(name))
                count.documents += 1
                count.chars += len(document["text"])
            yield document


def check_installed(languages=("en", "de"), dictionary: bool = True) -> None:
    """Raise :class:`MissingPackagesError` when the text or the dictionary is missing."""
    missing = []
    if "en" in languages and not man_page_files("en"):
        missing.append("manpages")
    if "de" in languages and not man_page_files("de"):
        missing.append("manpages-de")
    for language in languages:
        if debian_reference_file(language) is None:
            missing.append(f"debian-reference-{language}")
    if "de" in languages and not fortune_files("de"):
        missing.append("fortunes-de")
    if dictionary and not os.path.isfile(DING_PATH):
        missing.append("trans-de-en")
    if missing:
        raise MissingPackagesError(
            f"Debian packages not installed: {', '.join(missing)}; " + install_hint(missing))


# ---------------------------------------------------------------------------------------------
# the extraction into the project's JSON lines (tools/extract_debian_text.py)


def _split_of(source: str, valid_fraction: float, seed: int) -> str:
    """"valid" or "train", a hash of the source name, so that a man page and its translation
    (same file name) fall on the same side."""
    name = source.split(":", 1)[1] if source.startswith("man:") else source
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return "valid" if int.from_bytes(digest[:8], "big") / 2 ** 64 < valid_fraction else "train"


def truncate_paragraphs(text: str, max_chars: int) -> str:
    """The leading paragraphs of ``text`` that fit in ``max_chars`` (at least the first one,
    cut at a space)."""
    out, size = [], 0
    for paragraph in text.split("\n\n"):
        if out and size + len(paragraph) > max_chars:
            break
        out.append(paragraph)
        size += len(paragraph) + 2
    text = "\n\n".join(out)
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]


def man_name_line(text: str) -> Optional[str]:
    """The one-line description of a man page (the NAME / BEZEICHNUNG paragraph after " - ")."""
    paragraphs = text.split("\n\n")
    for index, paragraph in enumerate(paragraphs[:-1]):
        if paragraph.strip().upper() in ("NAME", "BEZEICHNUNG", "NAMEN"):
            line = paragraphs[index + 1]
            _, sep, description = line.partition(" - ")
            description = description.strip()
            return description if sep and len(description.split()) >= 3 else None
    return None


@dataclass
class ExtractionSummary:
    files: Dict[str, str]
    documents: Dict[str, int]
    chars: Dict[str, int]
    sources: Dict[str, Dict[str, SourceCount]]
    parallel_pairs: int


def extract(output_dir: str, valid_fraction: float = 0.05, seed: int = 1234,
            max_docs: Optional[Dict[str, int]] = None, max_chars: int = 4000,
            progress=None, max_man_pages: Optional[int] = None) -> ExtractionSummary:
    """Write ``{en,de}_{train,valid}.jsonl`` ({"text", "source"} lines), ``parallel.jsonl``
    ({"en", "de", "source"}: Ding example sentences and the NAME lines of man pages present in
    both languages, from the valid side only) and ``dictionary_ding.txt`` (a copy of the Ding
    file, for reproducibility) under ``output_dir``. Files are written atomically.

    Documents are shuffled with ``seed`` before the ``max_docs`` cut (per language), so a cut
    samples all sources."""
    from megatron_prealign.data.dictionaries import ding_parallel_sentences  # nltk: not at the tool's --help

    check_installed()
    os.makedirs(output_dir, exist_ok=True)
    files, documents, chars, sources = {}, {}, {}, {}
    name_lines: Dict[str, Dict[str, str]] = {"en": {}, "de": {}}
    for language in ("en", "de"):
        counts: Dict[str, SourceCount] = {}
        docs = []
        for document in language_documents(language, counts, max_man_pages, seed):
            if progress is not None:
                progress.update(1)
            split = _split_of(document["source"], valid_fraction, seed)
            if document["source"].startswith("man:") and split == "valid":
                line = man_name_line(document["text"])
                if line:
                    name_lines[language][document["source"]] = line
            docs.append((split, {"text": truncate_paragraphs(document["text"], max_chars),
                                 "source": document["source"]}))
        random.Random(seed).shuffle(docs)
        limit = (max_docs or {}).get(language)
        for split in ("train", "valid"):
            chosen = [d for s, d in docs if s == split]
            if limit is not None and split == "train":
                chosen = chosen[:limit]
            path = os.path.join(output_dir, f"{language}_{split}.jsonl")
            with atomic_text_writer(path) as handle:
                for document in chosen:
                    handle.write(json.dumps(document, ensure_ascii=False) + "\n")
            files[f"{language}_{split}"] = path
            documents[f"{language}_{split}"] = len(chosen)
            chars[f"{language}_{split}"] = sum(len(d["text"]) for d in chosen)
        sources[language] = counts
    parallel = [(en, de, "ding") for en, de in ding_parallel_sentences(DING_PATH)]
    parallel += [(name_lines["en"][s], name_lines["de"][s], s)
                 for s in sorted(set(name_lines["en"]) & set(name_lines["de"]))]
    files["parallel"] = os.path.join(output_dir, "parallel.jsonl")
    with atomic_text_writer(files["parallel"]) as handle:
        for en, de, source in parallel:
            handle.write(json.dumps({"en": en, "de": de, "source": source}, ensure_ascii=False) + "\n")
    files["dictionary"] = os.path.join(output_dir, "dictionary_ding.txt")
    with open(DING_PATH, encoding="utf-8") as source_handle, \
            atomic_text_writer(files["dictionary"]) as handle:
        shutil.copyfileobj(source_handle, handle)
    return ExtractionSummary(files, documents, chars, sources, len(parallel))
