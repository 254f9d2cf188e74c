"""Command-line options shared by the evaluation and generation tools (``cli/evaluate.py``,
``cli/generate.py``): the checkpoint to load and its layout, the tokenizer, and decoding.
Plain argparse: nothing heavy is imported before the arguments are parsed."""

from __future__ import annotations

import argparse

from megatron_prealign.data.tokenizer import add_tokenizer_args


def add_checkpoint_args(parser: argparse.ArgumentParser, tokenizer_required: bool,
                        load_required: bool = True, output_help: str = "JSON result (written atomically)"):
    group = parser.add_argument_group("checkpoint and layout")
    group.add_argument("--load", required=load_required, help="checkpoint root (as training's --save)")
    group.add_argument("--iteration", type=int, help="default: the latest complete checkpoint")
    group.add_argument("--trusted-checkpoint", action="store_true",
                       help="skip the check that the checkpoint's .metadata holds only checkpoint "
                       "metadata (torch unpickles it: a crafted one runs code); only for "
                       "checkpoints you trust")
    group.add_argument("--tensor-model-parallel-size", type=int, default=1)
    group.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    group.add_argument("--seq-length", type=int, help="default: the checkpoint's learned positions")
    group.add_argument("--micro-batch-size", type=int, default=8)
    group.add_argument("--bf16", action="store_true")
    group.add_argument("--seed", type=int, default=1234)
    group.add_argument("--output", required=True, help=output_help)
    expect = parser.add_argument_group("architecture the checkpoint must have (optional)")
    expect.add_argument("--model-family", choices=["gpt2", "llama"])
    expect.add_argument("--num-layers", type=int)
    expect.add_argument("--hidden-size", type=int)
    expect.add_argument("--num-attention-heads", type=int)
    add_tokenizer_args(parser)
    parser.add_argument("--add-bos", action="store_true",
                        help="begin every text and prompt with the tokenizer's beginning-of-"
                        "sequence token, as Hugging Face LLaMA models were trained (models "
                        "pretrained here were not)")
    for action in parser._actions:
        if action.dest == "tokenizer_type":
            action.required = tokenizer_required


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int = 128):
    """Decoding flags, shared by tools/generate.py and the generation-based evaluations."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--sample", action="store_true", help="sample (default: greedy decoding)")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0, help="0: no top-k cut")
    group.add_argument("--top-p", type=float, default=1.0, help="1.0: no nucleus cut")
    group.add_argument("--stop", nargs="+", default=[], metavar="STRING",
                       help="stop a continuation at any of these strings (cut before it)")
    group.add_argument("--batch-size", dest="micro_batch_size", type=int,
                       help="prompts decoded together (same as --micro-batch-size)")
    group.add_argument("--no-kv-cache", action="store_true",
                       help="recompute the whole prefix for every token (slow; for checking)")
    group.add_argument("--template", help="instruction template JSON (default: Alpaca / x-LLM)")
