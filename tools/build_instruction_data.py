#!/usr/bin/env python
"""Build instruction-tuning data (x-LLaMA CoIT / MuIT, Alpaca, chat) as megatron-core indexed datasets.

Thin wrapper of `megatron_prealign.cli.build_instruction_data` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.build_instruction_data import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
