"""``tools/generate.py``: continue prompts from a JSON-lines file with a checkpoint of any TP / PP
layout (``torchrun`` for TP/PP > 1) and write JSON lines (atomically, rank 0): each input record
plus ``prompt`` (the rendered prompt), ``output`` (the continuation's text, without EOD and cut
before a stop string), ``stop_reason`` (eod / stop / length) and ``new_tokens``."""

from __future__ import annotations

import argparse
import json
from typing import List, Optional

from megatron_prealign.cli.options import add_checkpoint_args, add_generation_args
from megatron_prealign.errors import report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0])
    add_checkpoint_args(parser, tokenizer_required=True, output_help="JSON lines out (atomic)")
    parser.add_argument("--input", required=True, help="JSON lines: {prompt} or {instruction, input}")
    parser.add_argument("--prompt-key", default="prompt")
    add_generation_args(parser)
    return parser


def run(args) -> List[dict]:
    from megatron_prealign import runtime
    from megatron_prealign.evaluation import common
    from megatron_prealign.generation.decoding import generate_texts, sampling_params
    from megatron_prealign.generation.model_loading import load_for, tokenizer_for
    from megatron_prealign.generation.prompts import load_template, records_to_prompts

    records = common.read_jsonl(args.input, "--input")
    prompts = records_to_prompts(records, load_template(args.template), args.input, args.prompt_key)
    sampling_params(args)
    model = load_for(args)
    to_ids = common.TextToIds(tokenizer_for(args), model.vocab_size, add_bos=args.add_bos)
    texts, generations = generate_texts(model, to_ids, prompts, args)
    out = [{**record, "prompt": prompt, "output": text, "stop_reason": g.stop_reason,
            "new_tokens": len(g.tokens)}
           for record, prompt, text, g in zip(records, prompts, texts, generations)]
    if runtime.rank_zero():
        common.write_jsonl(args.output, out)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_prealign import runtime
    from megatron_prealign.errors import EvaluationError

    try:
        out = run(args)
    except (EvaluationError, FileNotFoundError) as error:
        return report(str(error), "generate.py")
    finally:
        runtime.shutdown()
    if runtime.rank_zero():
        reasons = {r: sum(o["stop_reason"] == r for o in out) for r in ("eod", "stop", "length")}
        print(f"{len(out)} continuations ({json.dumps(reasons)}) -> {args.output}")
    return 0
