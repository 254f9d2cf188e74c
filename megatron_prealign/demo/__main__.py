"""`make demo`: the paper's En-Clone result (Table 1) in miniature, on the CPU.

Synthetic English (a small grammar plus facts about invented people), its En-Clone copy (a
shifted-token-id "second language", 5% of the English data, no facts), the En-Clone alignment
table and the indexed datasets are made with the real tools; then Joint Training and PreAlign
(pre-alignment, then input-only codeswitching) train the same tiny GPT on the same LM batches,
and the evaluation tools measure English / En-Clone perplexity and En-Clone CLKA (facts taught
in English only). Prints a Table-1 shaped table; writes results/demo/results.json and plots.
See the README ("Evaluation and the demo") for measured numbers and margins.

    python -m megatron_prealign.demo [--output-dir results/demo] [--seed 1234] [--quick]
"""

import argparse
import os

from megatron_prealign.demo.prealign import DemoConfig, run_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.path.join("results", "demo"))
    parser.add_argument("--seed", type=int, default=None, help="default: the configuration's (1234)")
    parser.add_argument("--quick", action="store_true", help="reduced configuration (about a minute)")
    args = parser.parse_args(argv)
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.seed is not None:
        config.seed = args.seed
    os.makedirs(args.output_dir, exist_ok=True)
    run_demo(config, args.output_dir)


if __name__ == "__main__":
    main()
