#!/usr/bin/env python
"""Real text from this machine for bench/preprocess.py --whole --corpus: JSON lines of Debian
changelogs, man pages (roff source, every installed language) and Python sources, cut into
documents of about 4 KB at line ends, exact duplicates dropped, shuffled (--seed) and written up
to --mb MB; plus a SentencePiece BPE (--vocab-size) trained on held-out text, the package
descriptions of apt's lists (none of the corpus). Which files exist depends on the machine, so
the corpus is reproducible on one machine, not across machines.

    python bench/real_corpus.py --output-dir /tmp/real --mb 620
    python bench/preprocess.py --whole 60 600 --repeats 3 \\
        --corpus /tmp/real/corpus.jsonl --tokenizer-model /tmp/real/descriptions_bpe.model
"""

import argparse
import glob
import gzip
import io
import json
import os
import random
import subprocess
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.data.tokenizer_training import train_sentencepiece  # noqa: E402

def pieces(text: str, limit: int = 4000):
    """Documents of about ``limit`` characters, cut at line ends."""
    lines, size = [], 0
    for line in text.splitlines(keepends=True):
        lines.append(line)
        size += len(line)
        if size >= limit:
            yield "".join(lines)
            lines, size = [], 0
    if lines:
        yield "".join(lines)


def changelog_entries(text: str, limit: int = 2000):
    """Changelog documents: blocks of whole entries (cut at a blank line past ``limit``)."""
    lines, size = [], 0
    for line in io.StringIO(text):  # lines end at "\n" only
        lines.append(line)
        size += len(line)
        if size > limit and line.strip() == "":
            yield "".join(lines).strip()
            lines, size = [], 0
    if lines:
        yield "".join(lines).strip()


def read_gzip(path: str) -> str:
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (OSError, EOFError):
        return ""


def documents(python_roots):
    # All changelogs as one text (entries may run across files' ends, as `zcat` would give them).
    yield from changelog_entries("".join(read_gzip(p) for p in sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))))
    for path in sorted(glob.glob("/usr/share/man/**/*.gz", recursive=True)):
        yield from pieces(read_gzip(path))
    for root in python_roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            try:
                with open(path, encoding="utf-8") as handle:
                    yield from pieces(handle.read())
            except (OSError, UnicodeDecodeError):
                continue


def descriptions():
    """Package descriptions (first line and long text) of apt's package lists."""
    for path in sorted(glob.glob("/var/lib/apt/lists/*_Packages*")):
        if path.endswith(".lz4"):
            text = subprocess.run(["lz4", "-dc", path], capture_output=True, check=True).stdout
        else:
            with open(path, "rb") as handle:
                text = handle.read()
        description = None
        for line in text.decode("utf-8", "replace").splitlines():
            if line.startswith("Description: "):
                description = [line[13:]]
            elif description is not None and line.startswith(" "):
                description.append("" if line.strip() == "." else line[1:])
            elif description is not None:
                yield " ".join(description)
                description = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--mb", type=float, default=620)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--python-roots", nargs="+",
                        default=[os.path.dirname(os.__file__), sysconfig.get_paths()["purelib"]],
                        help="directories whose .py files join the corpus (default: this "
                             "interpreter's standard library and site-packages)")
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    docs = list(documents(args.python_roots))
    random.Random(args.seed).shuffle(docs)
    written, seen, path = 0, set(), os.path.join(args.output_dir, "corpus.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        for doc in docs:
            if not doc.strip() or doc in seen:  # e.g. one file in two site-packages
                continue
            seen.add(doc)
            line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            if written > args.mb * 1e6:
                break
    if written < args.mb * 1e6:
        print(f"only {written / 1e6:.1f} MB of text on this machine", file=sys.stderr)
    os.replace(path + ".tmp", path)
    held_out = list(descriptions())
    if not held_out:
        raise SystemExit("no apt package lists (/var/lib/apt/lists): run apt-get update first")
    model = train_sentencepiece(held_out, os.path.join(args.output_dir, "descriptions_bpe"),
                                args.vocab_size)
    print(f"{path}: {written / 1e6:.1f} MB, {len(docs)} documents available; tokenizer {model} "
          f"from {len(held_out)} package descriptions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
