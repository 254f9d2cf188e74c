"""Convert between Hugging Face `transformers` checkpoints and this project's distributed
checkpoints (LLaMA / Mistral / GPT-2 families).

    # transformers directory -> distributed checkpoint at TP x PP (one process per TP x PP rank)
    torchrun --nproc-per-node 4 tools/convert_checkpoint.py import-hf --hf-dir llama-hf \\
        --save ckpt/llama --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2
    # distributed checkpoint of any layout -> transformers directory (one process)
    python tools/convert_checkpoint.py export-hf --load ckpt/run --out run-hf \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model data/spm.model

Bad input (unsupported architecture, config disagreeing with the weights, missing shards, a TP
size that does not divide the heads, an existing output path) exits with status 2 before
anything is written. See docs/hf_interop.md.
"""

import argparse
import os
import sys
import warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_checkpoint.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import-hf", help="transformers directory -> distributed checkpoint")
    imp.add_argument("--hf-dir", required=True, help="config.json + model.safetensors (or shards + index)")
    imp.add_argument("--save", required=True, help="new checkpoint directory (must not exist)")
    imp.add_argument("--tensor-model-parallel-size", type=int, default=1)
    imp.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    imp.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                     help="pad the vocabulary to a multiple of this x TP (Megatron-LM's default 128); "
                     "padded rows are masked out of every prediction")
    imp.add_argument("--params-dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    imp.add_argument("--no-progress", action="store_true")
    exp = commands.add_parser("export-hf", help="distributed checkpoint -> transformers directory")
    exp.add_argument("--load", required=True, help="checkpoint directory (any TP / PP layout)")
    exp.add_argument("--out", required=True, help="new transformers directory (must not exist)")
    exp.add_argument("--ckpt-step", type=int, help="iteration to export (default: the latest)")
    exp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                     help="default: the imported model's dtype, else float32")
    exp.add_argument("--max-shard-size-gb", type=float, default=5.0)
    exp.add_argument("--tokenizer-type", help="the training tokenizer's type (SentencePiece kinds, HuggingFaceTokenizer)")
    exp.add_argument("--tokenizer-model", help="also export the tokenizer (SentencePiece .model or HF directory)")
    exp.add_argument("--trusted-checkpoint", action="store_true",
                     help="skip the check that the checkpoint's .metadata holds only checkpoint "
                     "metadata (torch unpickles it); only for checkpoints you trust")
    exp.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    args = build_parser().parse_args(argv)
    from megatron_prealign import runtime
    from megatron_prealign.hf import convert
    from megatron_prealign.hf.config import ConversionError
    from megatron_prealign.hf.tokenizer import tokenizer_args
    from megatron_prealign.errors import describe_os_error, report

    try:
        if args.command == "import-hf":
            convert.import_hf(args.hf_dir, args.save, args.tensor_model_parallel_size,
                              args.pipeline_model_parallel_size, args.make_vocab_size_divisible_by,
                              args.params_dtype, progress=not args.no_progress)
            print(f"imported {args.hf_dir} -> {args.save}")
        else:
            if int(os.environ.get("WORLD_SIZE", "1")) != 1:
                raise ConversionError("export-hf runs in one process: start it with python, not torchrun")
            convert.export_hf(args.load, args.out, tokenizer_args(args.tokenizer_type, args.tokenizer_model),
                              args.dtype, int(args.max_shard_size_gb * 2**30), args.ckpt_step,
                              progress=not args.no_progress, trusted=args.trusted_checkpoint)
            print(f"exported {args.load} -> {args.out}")
    except (ConversionError, ValueError, FileNotFoundError) as error:
        return report(str(error), "convert_checkpoint.py")
    except OSError as error:  # staging or writing the output: permissions, a full disk
        where = error.filename or (args.save if args.command == "import-hf" else args.out)
        return report(describe_os_error(error, str(where)) + "; the previous output, if any, is untouched",
                      "convert_checkpoint.py")
    finally:
        runtime.shutdown()
    return 0


if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
