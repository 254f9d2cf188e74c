"""Extract real English and German text from installed Debian packages into JSON lines.

man pages (`manpages`, `manpages-de`), the Debian Reference (`debian-reference-en`, `-de`),
German fortunes (`fortunes-de`) and the Ding dictionary (`trans-de-en`), all offline. Writes
{en,de}_{train,valid}.jsonl ({"text", "source"}), parallel.jsonl ({"en", "de", "source"}: Ding
example sentences and man-page NAME lines of pages held out in both languages) and
dictionary_ding.txt (for tools/build_alignment_table.py --dictionary de=...). Exits with status 2
and the apt-get command to run when the packages are missing. See docs/real_languages.md.

Example:
    python tools/extract_debian_text.py --output-dir data/debian --max-docs en=20000
"""

import argparse
import sys
import time

from megatron_prealign.data import debian_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--valid-fraction", type=float, default=0.05,
                        help="share of sources (by hashed name) held out for validation")
    parser.add_argument("--max-docs", nargs="+", default=[], metavar="LANG=N",
                        help="keep at most N training documents of LANG (a seeded sample)")
    parser.add_argument("--max-chars", type=int, default=4000,
                        help="cut documents to their leading paragraphs within this length")
    parser.add_argument("--max-man-pages", type=int, default=None,
                        help="read only a seeded sample of this many man pages per language (quick runs)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    try:
        if not 0.0 < args.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in (0, 1), got {args.valid_fraction}")
        max_docs = {}
        for spec in args.max_docs:
            lang, sep, value = spec.partition("=")
            if not sep or lang not in ("en", "de") or not value.isdigit():
                raise ValueError(f"--max-docs expects en=N or de=N, got {spec!r}")
            max_docs[lang] = int(value)
        debian_text.check_installed()
    except ValueError as err:
        print(f"extract_debian_text.py: error: {err}", file=sys.stderr)
        return 2
    except debian_text.MissingPackagesError as err:
        print(f"extract_debian_text.py: error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tqdm(desc="extracting documents", unit=" docs", file=sys.stderr,
              disable=args.no_progress) as bar:
        summary = debian_text.extract(args.output_dir, args.valid_fraction, args.seed, max_docs,
                                      args.max_chars, bar, args.max_man_pages)
    for language, counts in summary.sources.items():
        for count in counts.values():
            print(f"{language} {count.name}: {count.documents} documents, {count.chars} characters")
    for name, path in summary.files.items():
        extra = (f" ({summary.documents[name]} documents, {summary.chars[name]} characters)"
                 if name in summary.documents else "")
        print(f"{name}: {path}{extra}")
    print(f"parallel sentence pairs: {summary.parallel_pairs}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
