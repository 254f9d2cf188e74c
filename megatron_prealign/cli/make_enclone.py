"""Make the En-Clone synthetic language: shifted copies of English token data and table.

Token id t of the original vocabulary (size V) becomes t + V (the vocabulary doubles; the EOD id
and any --shared-ids stay unshifted). Writes, as requested:
  --output-prefix      the clone copy of --input-prefix (indexed dataset + _loss_mask sibling)
  --output-table       the En-Clone alignment table of --alignment-table (language "enclone",
                       forms given as token ids)
  --mapping-output     the id mapping JSON for the perfect-alignment initialisation
See docs/data.md and megatron_prealign/data/enclone.py.

Example:
    python tools/make_enclone.py --tokenizer-type SentencePieceTokenizer --tokenizer-model spm.model \\
        --input-prefix data/en2_text_document --output-prefix data/enclone_text_document \\
        --alignment-table table.jsonl --output-table table_enclone.jsonl \\
        --mapping-output enclone_mapping.json
"""

import argparse
import sys
import time

from megatron_prealign.data.alignment_table import read_table, write_table
from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.enclone import (
    EncloneMapping,
    clone_indexed_dataset,
    clone_table,
    default_shared_ids,
)
from megatron_prealign.data.text_encoder import TextEncoder
from megatron_prealign.data.tokenizer import add_tokenizer_args, build_tokenizer_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tokenizer_args(parser)
    parser.add_argument("--input-prefix", help="English indexed dataset (prefix of .bin/.idx)")
    parser.add_argument("--output-prefix", help="where to write its clone copy")
    parser.add_argument("--alignment-table", help="English alignment table")
    parser.add_argument("--output-table", help="where to write the En-Clone table")
    parser.add_argument("--mapping-output", help="where to write the id mapping JSON")
    parser.add_argument("--shared-ids", nargs="*", type=int, default=[],
                        help="ids kept unshifted besides the tokenizer's EOD")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.input_prefix) != bool(args.output_prefix):
        parser.error("--input-prefix and --output-prefix go together")
    if bool(args.alignment_table) != bool(args.output_table):
        parser.error("--alignment-table and --output-table go together")
    if not (args.output_prefix or args.output_table or args.mapping_output):
        parser.error("nothing to do: give --output-prefix, --output-table and/or --mapping-output")
    from tqdm import tqdm

    start = time.perf_counter()
    encoder = TextEncoder(build_tokenizer_from_args(args))
    mapping = EncloneMapping(encoder.vocab_size, default_shared_ids(encoder, args.shared_ids))
    print(f"original vocabulary {mapping.original_vocab_size}, clone vocabulary "
          f"{mapping.vocab_size}, shared (unshifted) ids {mapping.shared_ids}")
    try:
        if args.output_prefix:
            with tqdm(desc="cloning", unit=" docs", file=sys.stderr,
                      disable=args.no_progress) as bar:
                stats = clone_indexed_dataset(args.input_prefix, args.output_prefix, mapping, bar)
            print(f"data: {stats['documents']} documents, {stats['tokens']} tokens -> "
                  f"{args.output_prefix}" + (" (+ _loss_mask)" if stats["loss_mask"] else ""))
        if args.output_table:
            entries = clone_table(read_table(args.alignment_table), encoder, mapping)
            write_table(args.output_table, entries)
            print(f"table: {len(entries)} words -> {args.output_table}")
    except (BadInputError, FileNotFoundError, AssertionError, ValueError) as err:
        print(f"make_enclone.py: error: {err}", file=sys.stderr)
        return 2
    if args.mapping_output:
        mapping.save(args.mapping_output)
        print(f"mapping -> {args.mapping_output}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
