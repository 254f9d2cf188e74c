"""`torchrun --nproc-per-node N -m megatron_prealign.pretrain ARGS`, Megatron-LM's pretrain_gpt.py
for this project: the command line lives in :mod:`megatron_prealign.cli.pretrain`."""

import sys

from megatron_prealign.cli.pretrain import main

if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
