#!/usr/bin/env python
"""Build the PreAlign alignment table: frequent English words and their translations.

Thin wrapper of `megatron_prealign.cli.build_alignment_table` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.build_alignment_table import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
