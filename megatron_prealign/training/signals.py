"""SIGTERM and SIGUSR1 (SLURM's preemption warning) ask the run to save a checkpoint and exit.

The handler only sets a flag; the loop checks it between iterations, agreeing across ranks
(one rank may get the signal a little later than another) so all ranks save together.
"""

import signal

import torch
import torch.distributed as dist

_received = []


def _handler(signum, frame):
    _received.append(signum)


def install():
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _handler)


def exit_requested() -> bool:
    from megatron_prealign import runtime

    flag = torch.tensor([1.0 if _received else 0.0], device=runtime.device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
