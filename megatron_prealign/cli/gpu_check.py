"""Command line of examples/gpu_check.sh's verdict (megatron_prealign/gpu_check.py): prints the
skips and failures, then the JSON line; exit status 1 when a check failed.

    python -m megatron_prealign.cli.gpu_check --layout NAME STRAIGHT_DIR RESUMED_DIR EVAL_JSON GPUS \\
        [--layout ...] --resume-iteration K [--memory-samples FILE] [--gpu-name NAME] \\
        [--hf-round-trip COMPARE_JSON] [--skipped NAME WHY ...] -- PRETRAIN_FLAGS
"""

import argparse
import json
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pretrain_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="gpu_check")
    parser.add_argument("--layout", nargs=5, action="append", required=True,
                        metavar=("NAME", "STRAIGHT_DIR", "RESUMED_DIR", "EVAL_JSON", "GPUS"))
    parser.add_argument("--resume-iteration", type=int, required=True)
    parser.add_argument("--resume-rtol", type=float, default=0.0)
    parser.add_argument("--memory-samples")
    parser.add_argument("--gpu-name")
    parser.add_argument("--short-run", nargs=2, action="append", default=[], metavar=("NAME", "LOG_DIR"),
                        help="a few steps (e.g. fp8 with pre-alignment) that must log finite losses")
    parser.add_argument("--skipped", nargs=2, action="append", default=[], metavar=("NAME", "WHY"))
    parser.add_argument("--hf-round-trip", metavar="COMPARE_JSON",
                        help="megatron_prealign.cli.hf_round_trip compare's output (missing: the round trip failed)")
    args = parser.parse_args(own)
    from megatron_prealign.gpu_check import summarize

    result = summarize(args.layout, args.resume_iteration, pretrain_flags, args.resume_rtol,
                       args.memory_samples, args.gpu_name, args.short_run, args.skipped, args.hf_round_trip)
    for name, why in args.skipped:
        print(f"gpu_check: skipped {name}: {why}", file=sys.stderr)
    for failure in result["failures"]:
        print(f"gpu_check: FAILED {failure}", file=sys.stderr)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
