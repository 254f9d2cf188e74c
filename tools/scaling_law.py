#!/usr/bin/env python
"""x-LLaMA's translation-data scaling law: fit it per language, allocate a budget with it, and

Thin wrapper of `megatron_prealign.cli.scaling_law` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.scaling_law import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
