"""The command line of `examples/gpu_check.sh`'s Hugging Face round trip
(:mod:`megatron_prealign.hf_round_trip`):

    python -m megatron_prealign.cli.hf_round_trip prepare --out DIR --tokenizer-model SPM_MODEL
    torchrun --nproc-per-node 1 -m megatron_prealign.cli.hf_round_trip compare --load CKPT \\
        --hf-dir DIR --output FILE.json [--original-hf-dir DIR] [--bf16]

``prepare`` writes DIR/hf_in (a tiny random LLaMA made by transformers) and
DIR/instructions.jsonl (+ .template.json); ``compare`` writes the comparison as JSON to
``--output``, prints it and exits with status 1 when the logits disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from megatron_prealign import hf_round_trip  # no heavy imports at module level: --help stays light


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf_round_trip", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="DIR/hf_in (the model), DIR/instructions.jsonl (+ .template.json)")
    prepare.add_argument("--out", required=True)
    prepare.add_argument("--tokenizer-model", required=True, help="SentencePiece model (its vocabulary size)")
    check = commands.add_parser("compare", help="transformers' logits of the export against ours")
    check.add_argument("--load", required=True)
    check.add_argument("--hf-dir", required=True)
    check.add_argument("--output", required=True)
    check.add_argument("--original-hf-dir", help="the model before fine-tuning (its logits must differ)")
    check.add_argument("--bf16", action="store_true")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        hf_round_trip.prepare(args.out, args.tokenizer_model)
        return 0
    result = hf_round_trip.compare(args.load, args.hf_dir, args.bf16, args.original_hf_dir)
    with open(args.output, "w") as handle:
        json.dump(result, handle)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
