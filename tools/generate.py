#!/usr/bin/env python
"""Generate continuations of prompts with a checkpoint (any TP/PP layout; torchrun for > 1 rank).

Examples:
    python tools/generate.py --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --input prompts.jsonl --output out.jsonl --max-new-tokens 64
    torchrun --nproc-per-node 2 tools/generate.py --load ckpt --tensor-model-parallel-size 2 ... \\
        --sample --temperature 0.7 --top-p 0.9 --seed 1 --stop "###"
Input lines: {"prompt": "..."} or instruction records {"instruction": ..., "input": ...}
(rendered with the Alpaca / x-LLM template, or --template FILE). See docs/evaluation.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.generate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
