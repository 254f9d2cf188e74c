"""SIGTERM and SIGUSR1 (SLURM's preemption warning) ask the run to save a checkpoint and exit.

The handler only sets a flag; the loop checks it between iterations, agreeing across ranks
(one rank may get the signal a little later than another) so all ranks save together, and then
raises :class:`ExitRequested`.
"""

import signal

import torch
import torch.distributed as dist

from megatron_prealign import runtime

_received = []


class ExitRequested(SystemExit):
    """Raised once the checkpoint is saved: the process ends with status 0 (as Megatron-LM's
    exit-signal handler), also when it runs several trainings in a row (the demos), which
    would otherwise see the flag and stop each following run at its first iteration."""

    def __init__(self) -> None:
        super().__init__(0)


def _handler(signum, frame):
    _received.append(signum)


def install():
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _handler)


def exit_requested() -> bool:
    flag = torch.tensor([1.0 if _received else 0.0], device=runtime.device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
