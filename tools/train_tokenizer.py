#!/usr/bin/env python
"""Train a tokenizer on JSON-lines corpora, sampling across files by weight.

Thin wrapper of `megatron_prealign.cli.train_tokenizer` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.train_tokenizer import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
