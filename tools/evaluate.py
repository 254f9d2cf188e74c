#!/usr/bin/env python
"""Evaluate a checkpoint: perplexity, alignment, clka, clka-dynamics, mixed-script, translation, qa,
representation, zs-clt, word-perplexity.

Examples (any TP/PP layout of the checkpoint; use torchrun for TP/PP > 1):
    python tools/evaluate.py perplexity --load ckpt --data-path en=data/en_text_document \\
        de=data/de_text_document --output results/ppl.json
    python tools/evaluate.py alignment --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --alignment-table table.jsonl \\
        --alignment-held-out-fraction 0.1 --output results/align.json --plot results/align.png
    python tools/evaluate.py clka --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --input clka.jsonl --output results/clka.json
    python tools/evaluate.py clka-dynamics --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --input facts.jsonl --enclone-mapping map.json \\
        --period-iterations 500 700 900 1100 --output results/fig4.json --plot results/fig4.png
    python tools/evaluate.py mixed-script --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --input prompts.jsonl --enclone-mapping map.json \\
        --prompt-language enclone --output results/mixed.json
    python tools/evaluate.py translation --load ckpt --tokenizer-type SentencePieceTokenizer \\
        --tokenizer-model spm.model --src en.txt --ref zh.txt --direction en-zh --output results/mt.json
    python tools/evaluate.py qa --input xquad.zh.json --language zh --predictions answers.json \\
        --output results/qa.json
See docs/evaluation.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
