#!/usr/bin/env python
"""Make the En-Clone synthetic language: shifted copies of English token data and table.

Thin wrapper of `megatron_prealign.cli.make_enclone` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.make_enclone import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
