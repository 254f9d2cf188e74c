"""Train a tokenizer on JSON-lines corpora, sampling across files by weight.

Default: a SentencePiece model with byte fallback (any language encodes), written as
PREFIX.model and PREFIX.vocab; use it with --tokenizer-type SentencePieceTokenizer
--tokenizer-model PREFIX.model. With --model-type byte-bpe: a GPT-2 style byte-level BPE saved as
the directory PREFIX/ for --tokenizer-type HuggingFaceTokenizer --tokenizer-model PREFIX.

Example:
    python tools/train_tokenizer.py --input en.jsonl de.jsonl --weights 0.9 0.1 \\
        --json-key text --vocab-size 32000 --model-prefix tok/spm
"""

import argparse
import os
import sys
import time

from megatron_prealign.data.bad_input import BadInputError, SkipCounter
from megatron_prealign.data.jsonl_input import expand_inputs
from megatron_prealign.errors import describe_os_error
from megatron_prealign.data.tokenizer_training import (
    TokenizerOutputError,
    sample_sentences,
    train_byte_level_bpe,
    train_sentencepiece,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="JSON-lines files or globs")
    parser.add_argument("--json-key", default="text")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--model-prefix", required=True)
    parser.add_argument("--model-type", choices=["bpe", "unigram", "byte-bpe"], default="bpe")
    parser.add_argument("--weights", nargs="+", type=float,
                        help="sampling weight per input file (after glob expansion)")
    parser.add_argument("--max-sentences", type=int, default=2_000_000,
                        help="total lines of text sampled for training")
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--no-hard-vocab-limit", action="store_true",
                        help="allow a smaller vocabulary on small corpora (SentencePiece)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-bad-lines", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    start = time.perf_counter()
    skip = SkipCounter(args.skip_bad_lines)
    out_dir = os.path.dirname(os.path.abspath(args.model_prefix))
    if not os.path.isdir(out_dir):  # found before training, not after
        print(f"train_tokenizer.py: error: --model-prefix directory {out_dir} does not exist",
              file=sys.stderr)
        return 2
    try:
        files = expand_inputs(args.input)
        with tqdm(desc="reading", unit=" lines", file=sys.stderr,
                  disable=args.no_progress) as bar:
            sentences, stats = sample_sentences(
                files, args.json_key, args.max_sentences, args.weights, args.seed, skip, bar
            )
    except (BadInputError, FileNotFoundError, ValueError) as err:
        print(f"train_tokenizer.py: error: {err}", file=sys.stderr)
        return 2
    if not sentences:
        print(f"train_tokenizer.py: error: no text in {' '.join(files)} (key {args.json_key!r}): "
              "nothing to train on", file=sys.stderr)
        return 2
    print(f"training {args.model_type} tokenizer on {len(sentences)} sampled lines ...",
          file=sys.stderr)
    try:
        if args.model_type == "byte-bpe":
            output = train_byte_level_bpe(sentences, args.model_prefix, args.vocab_size)
        else:
            output = train_sentencepiece(
                sentences, args.model_prefix, args.vocab_size, args.model_type,
                args.character_coverage, not args.no_hard_vocab_limit, args.threads,
            )
    except TokenizerOutputError as err:
        print(f"train_tokenizer.py: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"train_tokenizer.py: error: {describe_os_error(err, args.model_prefix)}", file=sys.stderr)
        return 1
    for s in stats:
        print(f"{s['file']}: weight {s['weight']:g}, {s['sentences']} lines, {s['sampled']} sampled")
    print(f"skipped lines: {skip.summary()}")
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
