#!/usr/bin/env python
"""Extract real English and German text from installed Debian packages into JSON lines.

Thin wrapper of `megatron_prealign.cli.extract_debian_text` (installed as a console script too); `--help` for usage."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_prealign.cli.extract_debian_text import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
