"""``tools/generate.py``: continue prompts from a JSON-lines file with a checkpoint of any TP / PP
layout (``torchrun`` for TP/PP > 1) and write JSON lines (atomically, rank 0): each input record
plus ``prompt`` (the rendered prompt), ``output`` (the continuation's text, without EOD and cut
before a stop string), ``stop_reason`` (eod / stop / length) and ``new_tokens``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from megatron_prealign.errors import report

if TYPE_CHECKING:  # torch and megatron-core are imported after the arguments are parsed
    from megatron_prealign.evaluation.model_loading import LoadedModel
    from megatron_prealign.generation.decoding import Generation
    from megatron_prealign.generation.sampling import SamplingParams


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


def sampling_params(args) -> SamplingParams:
    from megatron_prealign.evaluation.model_loading import EvaluationError
    from megatron_prealign.generation.sampling import SamplingParams

    params = SamplingParams(greedy=not args.sample, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    try:
        params.validate()
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    return params


def generate_texts(model: LoadedModel, to_ids, prompts: Sequence[str], args,
                   stop: Sequence[str] = ()) -> Tuple[List[str], List[Generation]]:
    """Continuations of text prompts (``to_ids``: :class:`evaluation.common.TextToIds`)."""
    from megatron_prealign.generation.decoding import completion_text, generate

    ids = [to_ids(p) for p in prompts]
    stop = list(stop) + list(args.stop)
    decode = to_ids.encoder.decode
    generations = generate(model, ids, args.max_new_tokens, sampling_params(args), eod=to_ids.eod,
                           stop_strings=stop, decode=decode, batch_size=args.micro_batch_size,
                           use_cache=not args.no_kv_cache, allowed_vocab=to_ids.encoder.vocab_size,
                           progress=True)
    return [completion_text(g, decode, to_ids.eod, stop) for g in generations], generations


def build_parser() -> argparse.ArgumentParser:
    from megatron_prealign.evaluation.cli import add_checkpoint_args

    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0])
    add_checkpoint_args(parser, tokenizer_required=True, output_help="JSON lines out (atomic)")
    parser.add_argument("--input", required=True, help="JSON lines: {prompt} or {instruction, input}")
    parser.add_argument("--prompt-key", default="prompt")
    add_generation_args(parser)
    return parser


def run(args) -> List[dict]:
    from megatron_prealign.evaluation import common
    from megatron_prealign.evaluation.cli import load_for, tokenizer_for
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
    if common.rank_zero():
        common.write_jsonl(args.output, out)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_prealign import runtime
    from megatron_prealign.evaluation.model_loading import EvaluationError

    try:
        out = run(args)
    except (EvaluationError, FileNotFoundError) as error:
        return report(str(error), "generate.py")
    finally:
        runtime.shutdown()
    from megatron_prealign.evaluation.common import rank_zero

    if rank_zero():
        reasons = {r: sum(o["stop_reason"] == r for o in out) for r in ("eod", "stop", "length")}
        print(f"{len(out)} continuations ({json.dumps(reasons)}) -> {args.output}")
    return 0
