"""`make demo`: the papers' results in miniature, on the CPU.

1. PreAlign (the paper's Table 1): synthetic English (a small grammar plus facts about invented
   people), its En-Clone copy (a shifted-token-id "second language", 5% of the English data, no
   facts), the En-Clone alignment table and the indexed datasets are made with the real tools;
   then Joint Training and PreAlign (pre-alignment, then input-only codeswitching) train the same
   tiny GPT on the same LM batches, and the evaluation tools measure English / En-Clone
   perplexity and En-Clone CLKA (facts taught in English only).
2. x-LLaMA: two synthetic target languages (Clonish, Tolvish), Joint and PreAlign bases,
   English-only instruction tuning vs CoIT per language, a translation-data sweep, the fitted
   scaling laws and a budget allocated by them vs the uniform split (docs/xllama.md).

Prints the tables; writes results/demo/results.json (``runs`` ... for PreAlign, ``xllama`` for
x-LLaMA) and plots. See the README ("Evaluation and the demo", "x-LLaMA") for measured numbers.

    python -m megatron_prealign.demo [--only prealign|xllama] [--output-dir results/demo]
                                     [--seed 1234] [--quick]
    python -m megatron_prealign.demo --only xllama --full [--seed 1234]   (make demo-xllama-full)
    python -m megatron_prealign.demo --only real [--runs joint prealign] [--seeds 1234 1] [--quick]

``--only real`` (not part of the default) runs English -> German on real Debian text
(``megatron_prealign.demo.real``; needs the packages listed in docs/real_languages.md).
``--only clka-dynamics`` (not part of the default either: 11 minutes on one thread) runs
PreAlign's Figure 4 analysis in miniature (``megatron_prealign.demo.clka_dynamics``; writes
results/demo_clka_dynamics/ unless --output-dir is given).
"""

import argparse
import json
import os
import sys

from megatron_prealign.demo.prealign import DemoConfig, log, run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.path.join("results", "demo"))
    parser.add_argument("--seed", type=int, default=None, help="default: the configuration's (1234)")
    parser.add_argument("--quick", action="store_true", help="reduced configuration (a few minutes)")
    parser.add_argument("--full", action="store_true",
                        help="x-LLaMA part: the full configuration (QA with 220 items per cell, three bases, "
                             "6-point sweep, fine-tuning noise; ~30 min per seed on a quiet core; docs/xllama.md)")
    parser.add_argument("--only", choices=("prealign", "xllama", "real", "clka-dynamics"),
                        help="run one part (default: prealign and xllama; real and clka-dynamics only when asked)")
    parser.add_argument("--runs", nargs="+", default=None,
                        help="real part: runs to train (default: joint prealign prealign_3_translations_words128)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="real part: seeds (default: 1234)")
    parser.add_argument("--total-iters", type=int, default=None,
                        help="real part: LM batches per run (default: the configuration's)")
    parser.add_argument("--text-dir", help="real part: reuse extracted text (tools/extract_debian_text.py)")
    args = parser.parse_args(argv)
    if args.full and (args.quick or args.only != "xllama"):
        parser.error("--full is a configuration of the x-LLaMA part: use it with --only xllama, without --quick")
    if args.only == "real":
        run_real_part(args)
        return
    if args.only == "clka-dynamics":
        run_clka_dynamics_part(args)
        return
    from megatron_prealign.demo import xllama

    run_xllama = args.only != "prealign"
    os.makedirs(args.output_dir, exist_ok=True)
    if args.only != "xllama":
        config = DemoConfig.quick() if args.quick else DemoConfig()
        if args.seed is not None:
            config.seed = args.seed
        run_demo(config, args.output_dir)
    if run_xllama:
        config = (xllama.XllamaDemoConfig.quick() if args.quick else
                  xllama.XllamaDemoConfig.full() if args.full else xllama.XllamaDemoConfig())
        if args.seed is not None:
            config.seed = args.seed
        run_xllama_part(config, args.output_dir)


def run_real_part(args) -> dict:
    from megatron_prealign.demo.real import DEMO_RUNS, RealConfig, run_real

    real = RealConfig.quick() if args.quick else RealConfig()
    if args.total_iters is not None:
        real.total_iters = args.total_iters
        real.save_interval = max(1, args.total_iters // 4)
    default_output = os.path.join("results", "demo")
    output = os.path.join("results", "demo_real") if args.output_dir == default_output else args.output_dir
    os.makedirs(output, exist_ok=True)
    seeds = args.seeds or [args.seed if args.seed is not None else real.seed]
    return run_real(real, output, args.runs or list(DEMO_RUNS), seeds, args.text_dir)


def run_clka_dynamics_part(args) -> dict:
    from megatron_prealign.demo.clka_dynamics import DynamicsConfig, run_dynamics

    config = DynamicsConfig.quick() if args.quick else DynamicsConfig()
    if args.seed is not None:
        config.seed = args.seed
    default_output = os.path.join("results", "demo")
    output = os.path.join("results", "demo_clka_dynamics") if args.output_dir == default_output else args.output_dir
    return run_dynamics(config, output)


def run_xllama_part(config, output_dir: str) -> dict:
    """Run the x-LLaMA miniature and add its record to results.json as ``xllama``."""
    from megatron_prealign.demo import xllama
    from megatron_prealign.evaluation.common import write_json

    record = xllama.run_xllama(config, output_dir)
    path = os.path.join(output_dir, "results.json")
    results = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
    results["xllama"] = record
    write_json(path, results)
    print("\nx-LLaMA in miniature:\n" + xllama.summary(record), flush=True)
    log(f"results -> {path} (x-LLaMA part {record['timings_s']['total_s']:.0f} s)")
    return record


if __name__ == "__main__":
    sys.exit(main())
