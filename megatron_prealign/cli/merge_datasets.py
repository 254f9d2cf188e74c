"""Merge megatron-core indexed datasets and their loss-mask siblings into one dataset.

Joins the partitions written by `tools/preprocess_data.py --partitions N --partition-index K`
(one per machine) in the given order (globs sorted: partition order). Checks first that every
input exists, that all have the same token dtype and that each has a loss-mask sibling matching
its tokens; then merges as megatron-core's IndexedDatasetBuilder.add_index does and writes the
output under temporary names renamed at the end. See docs/data.md.

Example:
    python tools/merge_datasets.py --input 'data/en-part*_text_document' \\
        --output-prefix data/en_text_document
"""

import argparse
import sys

from megatron_prealign.data.merge import MergeError, expand_prefixes, merge_datasets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True,
                        help="dataset prefixes (PREFIX for PREFIX.bin/.idx) or globs over them")
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--no-loss-mask", action="store_true",
                        help="merge the token data only (no _loss_mask sibling is read or written)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = merge_datasets(expand_prefixes(args.input), args.output_prefix,
                                 with_loss_mask=not args.no_loss_mask,
                                 progress=not args.no_progress)
    except MergeError as err:
        print(f"merge_datasets.py: error: {err}", file=sys.stderr)
        return 2
    print(f"merged {summary['inputs']} datasets -> {summary['output']} "
          f"({summary['documents']} documents, {summary['tokens']} tokens, {summary['dtype']}"
          + (", with loss masks)" if summary["loss_mask"] else ", tokens only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
