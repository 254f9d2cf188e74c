"""Tokenize JSON-lines corpora into megatron-core indexed datasets, with PreAlign codeswitching.

Writes ``{output_prefix}_{key}_document.{bin,idx}`` (plain Megatron LM data) and the
``..._document_loss_mask.{bin,idx}`` sibling (uint8; 0 = token of a codeswitched word that is not
a prediction target in input-only mode). See docs/data.md.

Example:
    python tools/preprocess_data.py --input 'corpus/en-*.jsonl' --json-keys text \\
        --output-prefix data/en --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model tok/spm.model --append-eod --workers 8 \\
        --alignment-table table.jsonl --codeswitch-languages de --codeswitch-ratio 0.05
"""

import argparse
import os
import sys

from megatron_prealign.errors import ConfigError, describe_os_error
from megatron_prealign.data.codeswitch import CODESWITCH_MODES
from megatron_prealign.data.jsonl_input import expand_inputs
from megatron_prealign.data.workers import partition_files, partition_prefix
from megatron_prealign.data.preprocess import (
    PreprocessSettings,
    format_summary,
    run_preprocess,
)
from megatron_prealign.data.tokenizer import add_tokenizer_args, spec_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("input data")
    group.add_argument("--input", nargs="+", required=True, help="JSON-lines files or globs")
    group.add_argument("--json-keys", nargs="+", default=["text"])
    group.add_argument("--skip-bad-lines", action="store_true",
                       help="skip and count bad lines instead of stopping at the first one")
    add_tokenizer_args(parser)
    group = parser.add_argument_group("output data")
    group.add_argument("--output-prefix", required=True)
    group.add_argument("--append-eod", action="store_true")
    group = parser.add_argument_group("runtime")
    group.add_argument("--workers", type=int, default=1)
    group.add_argument("--partitions", type=int, default=1,
                       help="split the input files into this many contiguous, size-balanced "
                            "shares (one per machine, e.g. a SLURM array task); see "
                            "tools/merge_datasets.py")
    group.add_argument("--partition-index", type=int, default=None,
                       help="0-based share this run preprocesses (needed with --partitions > 1); "
                            "outputs go to PREFIX-partKKKKK-of-NNNNN_{key}_document")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--no-chunk-cache", action="store_true",
                       help="encode SentencePiece BPE text with SentencePiece alone, not through "
                            "the cache of space-separated chunks (same ids; docs/data.md)")
    group = parser.add_argument_group("codeswitching (PreAlign)")
    group.add_argument("--alignment-table", help="table written by tools/build_alignment_table.py")
    group.add_argument("--codeswitch-ratio", type=float, default=None,
                       help="probability that an eligible word switches (default 0.05)")
    group.add_argument("--codeswitch-mode", choices=CODESWITCH_MODES, default=None,
                       help="default input-only with a table, none without")
    group.add_argument("--codeswitch-languages", nargs="+",
                       help="target languages to switch into (default: all in the table)")
    group.add_argument("--seed", type=int, default=1234)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    mode = args.codeswitch_mode or ("input-only" if args.alignment_table else "none")
    if mode != "none" and not args.alignment_table:
        parser.error(f"--codeswitch-mode {mode} needs --alignment-table")
    ratio = 0.05 if args.codeswitch_ratio is None else args.codeswitch_ratio
    if not 0.0 <= ratio <= 1.0:
        parser.error("--codeswitch-ratio must be in [0, 1]")
    if args.tokenizer_model and not os.path.exists(args.tokenizer_model):
        parser.error(f"--tokenizer-model {args.tokenizer_model} does not exist")
    if args.alignment_table and not os.path.isfile(args.alignment_table):
        parser.error(f"--alignment-table {args.alignment_table} does not exist")
    out_dir = os.path.dirname(os.path.abspath(args.output_prefix))
    if not os.path.isdir(out_dir):
        parser.error(f"output directory does not exist: {out_dir}")
    inputs, output_prefix = args.input, args.output_prefix
    if args.partitions != 1 or args.partition_index is not None:
        if args.partition_index is None:
            parser.error("--partitions needs --partition-index (e.g. $SLURM_ARRAY_TASK_ID)")
        try:
            inputs = partition_files(expand_inputs(args.input), args.partitions, args.partition_index)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
        output_prefix = partition_prefix(args.output_prefix, args.partition_index, args.partitions)
        print(f"partition {args.partition_index} of {args.partitions}: {len(inputs)} files, "
              f"{inputs[0]} ... {inputs[-1]} -> {output_prefix}", file=sys.stderr)
    settings = PreprocessSettings(
        tokenizer=spec_from_args(args),
        json_keys=args.json_keys,
        append_eod=args.append_eod,
        alignment_table=args.alignment_table,
        languages=args.codeswitch_languages or [],
        codeswitch_ratio=ratio,
        codeswitch_mode=mode,
        seed=args.seed,
        skip_bad_lines=args.skip_bad_lines,
        chunk_cache=not args.no_chunk_cache,
    )
    try:
        summary = run_preprocess(
            inputs, output_prefix, settings, workers=args.workers,
            progress=not args.no_progress,
        )
    except (ConfigError, FileNotFoundError) as err:
        print(f"preprocess_data.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk: earlier outputs are untouched (atomic writers)
        print(f"preprocess_data.py: error: {describe_os_error(err, args.output_prefix)}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
