"""`make demo`: the paper's En-Clone result (Table 1) in miniature, on the CPU.

Synthetic English (a small grammar plus facts about invented people), its En-Clone copy (a
shifted-token-id "second language", 5% of the English data, no facts), the En-Clone alignment
table and the indexed datasets are made with the real tools; then Joint Training and PreAlign
(pre-alignment, then input-only codeswitching) train the same tiny GPT on the same LM batches,
and the evaluation tools measure English / En-Clone perplexity and En-Clone CLKA (facts taught
in English only). Prints a Table-1 shaped table; writes results/demo/results.json and plots.
See the README ("Evaluation and the demo") for measured numbers and margins.

    python -m megatron_prealign.demo [--output-dir results/demo] [--seed 1234] [--quick]
    python -m megatron_prealign.demo --only real [--runs joint prealign] [--seeds 1234 1] [--quick]

``--only real`` runs the English -> German part instead (``megatron_prealign.demo.real``; real Debian text, needs
the packages listed in docs/real_languages.md).
"""

import argparse
import os

from megatron_prealign.demo.prealign import DemoConfig, run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.path.join("results", "demo"))
    parser.add_argument("--seed", type=int, default=None, help="default: the configuration's (1234)")
    parser.add_argument("--quick", action="store_true", help="reduced configuration (about a minute)")
    parser.add_argument("--only", choices=["enclone", "real"], default="enclone",
                        help="which part: En-Clone (default) or English -> German on real text")
    parser.add_argument("--runs", nargs="+", default=None,
                        help="real part: runs to train (default: joint prealign)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="real part: seeds (default: 1234)")
    parser.add_argument("--total-iters", type=int, default=None,
                        help="real part: LM batches per run (default: the configuration's)")
    parser.add_argument("--text-dir", help="real part: reuse extracted text (tools/extract_debian_text.py)")
    args = parser.parse_args(argv)
    if args.only == "real":
        from megatron_prealign.demo.real import RealConfig, run_real

        real = RealConfig.quick() if args.quick else RealConfig()
        if args.total_iters is not None:
            real.total_iters = args.total_iters
            real.save_interval = max(1, args.total_iters // 4)
        output = args.output_dir if args.output_dir != os.path.join("results", "demo") else os.path.join("results", "demo_real")
        os.makedirs(output, exist_ok=True)
        seeds = args.seeds or [args.seed if args.seed is not None else real.seed]
        run_real(real, output, args.runs or ["joint", "prealign"], seeds, args.text_dir)
        return
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.seed is not None:
        config.seed = args.seed
    os.makedirs(args.output_dir, exist_ok=True)
    run_demo(config, args.output_dir)


if __name__ == "__main__":
    main()
