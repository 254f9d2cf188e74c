"""Build the PreAlign alignment table: frequent English words and their translations.

Counts English words with NLTK's word tokenizer (no NLTK data needed), keeps words seen at least
--min-count times (optionally only the most frequent --top-fraction of them), joins bilingual
dictionaries (MUSE `src tgt` lines, or the paper's JSON-lines forms {"src_text","tgt_text"} /
{"words": "bank $ 银行 $ 水岸"}), and writes one JSON line per word. Prints coverage: the share of
the corpus' word tokens that have a translation, per language. See docs/data.md.

Example:
    python tools/build_alignment_table.py --input 'en/*.jsonl' --json-key text \\
        --dictionary de=muse/en-de.txt zh=muse/en-zh.txt --output table.jsonl --top-fraction 0.25

On several machines (e.g. a SLURM array, examples/count_words_slurm.sbatch): each counts a share,
    ... --input 'en/*.jsonl' --counts-only --save-counts counts/part-$I.tsv --partitions N --partition-index $I
then one builds the table from the sum (the same counts as one pass):
    ... --input-counts 'counts/part-*.tsv' --dictionary de=muse/en-de.txt --output table.jsonl
"""

import argparse
import os
import sys
import time

from megatron_prealign.data.alignment_table import write_table
from megatron_prealign.errors import describe_os_error
from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.jsonl_input import expand_inputs
from megatron_prealign.data.workers import partition_files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="English JSON-lines files/globs")
    source.add_argument("--input-counts", nargs="+", metavar="COUNTS",
                        help="instead of --input: counts files written by --save-counts (e.g. "
                             "one per machine), summed")
    parser.add_argument("--json-key", default="text")
    parser.add_argument("--dictionary", nargs="+", metavar="LANG=PATH",
                        help="required unless --counts-only")
    parser.add_argument("--output", help="the table (required unless --counts-only)")
    parser.add_argument("--save-counts", metavar="PATH",
                        help="also write the English word counts (word<TAB>count lines)")
    parser.add_argument("--counts-only", action="store_true",
                        help="stop after writing --save-counts (a machine's share of the corpus)")
    parser.add_argument("--partitions", type=int, default=1,
                        help="with --counts-only: count only share --partition-index of this many "
                             "contiguous, size-balanced shares of the input files (one per machine)")
    parser.add_argument("--partition-index", type=int, default=None)
    parser.add_argument("--min-count", type=int, default=20)
    parser.add_argument("--top-fraction", type=float, default=None,
                        help="keep only this most frequent share of the words (paper: 0.25)")
    parser.add_argument("--max-translations", type=int, default=5)
    parser.add_argument("--keep-identical", action="store_true",
                        help="keep translations spelled like the English word (dropped by default)")
    parser.add_argument("--exclude-stopwords", action="store_true",
                        help="leave English stop words (NLTK's list) out: content words only")
    parser.add_argument("--target-corpus", nargs="+", default=[], metavar="LANG=FILES",
                        help="JSON lines of a target language: keep translations occurring there "
                             "(--min-target-count) and prefer the most frequent ones")
    parser.add_argument("--min-target-count", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-bad-lines", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tqdm import tqdm

    # Counting needs NLTK (seconds to import): imported once argparse has accepted the flags.
    from megatron_prealign.data.dictionaries import read_dictionary
    from megatron_prealign.data.table_builder import (
        ENGLISH_STOPWORDS,
        build_entries,
        count_corpus_words,
        coverage,
        parse_dictionary_args,
        read_counts,
        select_frequent,
        write_counts,
    )

    if args.counts_only and not args.save_counts:
        parser.error("--counts-only needs --save-counts PATH")
    if not args.counts_only and not (args.dictionary and args.output):
        parser.error("--dictionary and --output are required (unless --counts-only)")
    partitioned = args.partitions != 1 or args.partition_index is not None
    if partitioned and not (args.counts_only and args.input):
        parser.error("--partitions counts a share of --input: use it with --counts-only "
                     "--save-counts, then build the table from all shares with --input-counts")
    if partitioned and args.partition_index is None:
        parser.error("--partitions needs --partition-index (e.g. $SLURM_ARRAY_TASK_ID)")
    start = time.perf_counter()
    skip = SkipCounter(args.skip_bad_lines)
    for flag, path in (("--output", args.output), ("--save-counts", args.save_counts)):
        out_dir = os.path.dirname(os.path.abspath(path)) if path else None
        if out_dir and not os.path.isdir(out_dir):  # found before counting, not after
            print(f"build_alignment_table.py: error: {flag} directory {out_dir} does not exist",
                  file=sys.stderr)
            return 2
    try:
        if args.max_translations < 1:
            raise ValueError("--max-translations must be >= 1")
        dict_args = parse_dictionary_args(args.dictionary or [])
        if args.input_counts:
            files = expand_inputs(args.input_counts)
        else:
            files = expand_inputs(args.input)
            if partitioned:
                files = partition_files(files, args.partitions, args.partition_index)
                print(f"partition {args.partition_index} of {args.partitions}: {len(files)} files, "
                      f"{files[0]} ... {files[-1]}", file=sys.stderr)
        dictionaries = {}
        for lang, path in dict_args:
            for word, forms in read_dictionary(path, skip).items():
                merged = dictionaries.setdefault(lang, {}).setdefault(word, [])
                merged.extend(f for f in forms if f not in merged)
        if args.input_counts:
            counts = read_counts(files)
        else:
            with tqdm(desc="counting words", total=sum(map(os.path.getsize, files)), unit="B",
                      unit_scale=True, file=sys.stderr, disable=args.no_progress) as bar:
                counts = count_corpus_words(files, args.json_key, skip, args.workers, bar)
        if args.save_counts:
            try:
                write_counts(args.save_counts, counts)
            except OSError as err:
                print(f"build_alignment_table.py: error: {describe_os_error(err, args.save_counts)}",
                      file=sys.stderr)
                return 1
        if args.counts_only:
            print(f"corpus: {len(files)} files, {sum(counts.values())} word tokens, "
                  f"{len(counts)} types -> {args.save_counts}")
            print(f"skipped lines: {skip.summary()}")
            return 0
        words = select_frequent(counts, args.min_count, args.top_fraction)
        target_counts = {}
        for spec in args.target_corpus:
            lang, sep, pattern = spec.partition("=")
            if not sep or lang not in dict(dict_args):
                raise ValueError(f"--target-corpus expects LANG=FILES with a LANG given to "
                                 f"--dictionary, got {spec!r}")
            target_files = expand_inputs([pattern])
            with tqdm(desc=f"counting {lang} words", total=sum(map(os.path.getsize, target_files)),
                      unit="B", unit_scale=True, file=sys.stderr, disable=args.no_progress) as bar:
                target_counts[lang] = count_corpus_words(
                    target_files, args.json_key, skip, args.workers, bar)
    except (BadInputError, FileNotFoundError, ValueError) as err:
        print(f"build_alignment_table.py: error: {err}", file=sys.stderr)
        return 2
    entries = build_entries(
        words, counts, dictionaries, args.max_translations, args.keep_identical,
        exclude_words=ENGLISH_STOPWORDS if args.exclude_stopwords else frozenset(),
        target_counts=target_counts, min_target_count=args.min_target_count,
    )
    if not entries:
        print(f"build_alignment_table.py: error: no frequent word has a translation in the "
              f"dictionaries (corpus: {len(counts)} word types): no table written; lower "
              "--min-count or check the dictionaries' languages", file=sys.stderr)
        return 2
    try:
        write_table(args.output, entries)
    except OSError as err:
        print(f"build_alignment_table.py: error: {describe_os_error(err, args.output)}", file=sys.stderr)
        return 1
    languages = [lang for lang, _ in dict_args]
    languages = list(dict.fromkeys(languages))
    print(f"corpus: {len(files)} files, {sum(counts.values())} word tokens, {len(counts)} types")
    print(f"frequent words (count >= {args.min_count}"
          + (f", top {args.top_fraction:g}" if args.top_fraction else "") + f"): {len(words)}")
    print(f"table: {len(entries)} words with a translation -> {args.output}")
    print("coverage (share of corpus word tokens with a translation):")
    for cov in coverage(entries, counts, languages):
        print(f"  {cov.language:>6}: {cov.share:7.2%}  ({cov.table_words} words, "
              f"{cov.covered_tokens}/{cov.total_tokens} tokens)")
    print(f"skipped lines: {skip.summary()}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
