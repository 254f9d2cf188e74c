"""``python -m megatron_prealign.cli.launch_plan [options] -- PRETRAIN_FLAGS``: the launch plan
(:mod:`megatron_prealign.launch_plan`) of a pretraining command line, as the launch scripts'
``--dry-run`` prints it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from megatron_prealign import launch_plan
from megatron_prealign.training import arguments


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="launch_plan", description=launch_plan.__doc__.split("\n\n")[0],
                                     usage="python -m megatron_prealign.cli.launch_plan [options] -- "
                                           "PRETRAIN_FLAGS")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--node-counts", type=int, nargs="*", default=[],
                        help="also check the layout for these node counts")
    parser.add_argument("--gpu", choices=sorted(launch_plan.GPUS), default="a100")
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--assumed-vocab-size", type=int, default=50257,
                        help="tokenizer vocabulary when the tokenizer model is not readable here")
    parser.add_argument("--default-alignment-words", type=int,
                        help="the launcher's rule for the other node counts: this many word groups "
                        "per step, raised to a multiple of DP")
    parser.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    opts = parser.parse_args(argv[:split])  # --help answers here
    if split == len(argv):
        parser.error("give the pretrain flags after --")
    pretrain_argv = argv[split + 1:]

    def one(nodes):
        argv = list(pretrain_argv)
        if opts.default_alignment_words and nodes != opts.nnodes and "--alignment-words-per-batch" in argv:
            layout = arguments.parse_config(argv).parallel
            dp = nodes * opts.gpus_per_node // (layout.tensor_model_parallel_size * layout.pipeline_model_parallel_size)
            words = -(-opts.default_alignment_words // max(dp, 1)) * max(dp, 1)
            argv[argv.index("--alignment-words-per-batch") + 1] = str(words)
        return launch_plan.plan(argv, nodes, opts.gpus_per_node, opts.gpu, opts.mfu, opts.assumed_vocab_size)

    try:
        result = one(opts.nnodes)
    except ValueError as error:
        print(f"error: {error}; change the layout or NNODES", file=sys.stderr)
        return 2
    others, layouts, plans = {}, {}, []
    for nodes in opts.node_counts:
        try:
            other = one(nodes)
            plans.append(other)
            mem = other["memory_gib_prealign"] or other["memory_gib"]
            others[nodes] = (f"{launch_plan.layout_summary(other)}, {other['step_seconds']:.2f} s/step, "
                             f"{mem['total']:.1f} GiB per GPU")
            layouts[nodes] = other["layout"] | {"memory_gib": mem["total"], "step_seconds": other["step_seconds"]}
        except ValueError as error:
            others[nodes] = f"INVALID: {error}"
            layouts[nodes] = {"invalid": str(error)}
    result["node_counts"] = layouts
    if opts.format == "json":
        print(json.dumps(result, sort_keys=True))
    elif opts.format == "markdown":
        print(launch_plan.format_markdown(plans or [result]))
    else:
        print(launch_plan.format_text(result, others))
        print("plan (JSON): " + json.dumps(result, sort_keys=True))
    return 2 if any(text.startswith("INVALID") for text in others.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
