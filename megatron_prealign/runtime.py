"""The one place that knows whether we run on CUDA or on the CPU.

`initialize()` sets up torch.distributed (nccl on CUDA, gloo on the CPU, also for a single
process started without torchrun), megatron-core's `parallel_state`, the seeds and megatron's
RNG tracker. Without a CUDA device it first applies `cpu_compat`'s patches so that the real
megatron-core runs on the CPU; with one, nothing is patched.
"""

import dataclasses
import datetime
import gc
import os
import random
import re
import socket
import warnings
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_prealign.compat import cpu as cpu_compat, device_check
from megatron_prealign.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Runtime:
    device: torch.device
    backend: str
    rank: int
    world_size: int
    local_rank: int
    cpu_patches: tuple


def cuda_in_use() -> bool:
    """CUDA is used whenever a device is visible; PREALIGN_FORCE_CPU=1 opts out (debugging)."""
    return torch.cuda.is_available() and os.environ.get("PREALIGN_FORCE_CPU", "0") != "1"


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if cuda_in_use() else torch.device("cpu")


def rank_zero() -> bool:
    """Whether this process writes results and prints (rank 0, or no process group)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def to_device(batch):
    """A batch (dict / list / tensor of host tensors) on `device()`: pinned host memory and a
    non-blocking copy on CUDA, so the copy overlaps compute; non-tensors pass through."""
    target = device()
    if isinstance(batch, dict):
        return {key: to_device(value) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value) for value in batch)
    if not isinstance(batch, torch.Tensor):
        return batch
    if target.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(target, non_blocking=target.type == "cuda")


def transformer_engine_available() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def gradient_accumulation_fusion_available() -> bool:
    """apex's fused weight-gradient kernel, which megatron-core's linear layers need for
    gradient_accumulation_fusion (the NVIDIA PyTorch container has it)."""
    try:
        import fused_weight_gradient_mlp_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def fp8_available():
    """(available, reason): fp8 needs Transformer Engine and a GPU of compute capability >= 8.9
    (Ada / Hopper and newer)."""
    if not transformer_engine_available():
        return False, "Transformer Engine is not installed"
    if not cuda_in_use():
        return False, "no CUDA device is in use"
    try:
        from transformer_engine.pytorch.fp8 import check_fp8_support
    except ImportError:  # moved in newer TE releases: fall back to the documented requirement
        capability = torch.cuda.get_device_capability()
        return capability >= (8, 9), f"compute capability {capability} < (8, 9)"
    supported, reason = check_fp8_support()
    return bool(supported), reason or "the GPU does not support fp8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Launch:
    """Who started this process: "torchrun" (RANK / WORLD_SIZE, also any env:// launcher),
    "slurm" (an `srun` step without torchrun), or "single" (a plain `python`)."""
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    # SLURM only: where the process group meets (torchrun's env:// carries its own)
    master_addr: Optional[str] = None
    master_port: Optional[int] = None


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as ``gpu[03-05,09],cpu1`` (-> gpu03)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return "127.0.0.1"
    prefix, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def detect_launcher(environ=None) -> Launch:
    """torchrun's environment wins; else SLURM's task variables inside an `srun` step (set up as
    torchrun's, MASTER_ADDR = the step's first node, unless set); else a world of one. Several
    processes without any of these would each be a world of one: mpirun's are refused here, any
    other are stopped by the --save lock (training/save_lock.py). Reads the environment only."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch("torchrun", int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env  # srun, not the batch script itself
    if in_step and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        return Launch("slurm", int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0")),
                      master_addr=env.get("MASTER_ADDR") or _first_slurm_host(nodes),
                      master_port=int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000))
    for variable in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        if int(env.get(variable, "1") or 1) > 1:
            raise ConfigError(
                f"{variable}={env[variable]}: several processes were started without torchrun's "
                "RANK / WORLD_SIZE; each would train alone. Launch with torchrun or srun.")
    return Launch("single", 0, 1, 0)


def _init_process_group(backend: str, timeout_minutes: float):
    if dist.is_initialized():
        return
    timeout = datetime.timedelta(minutes=timeout_minutes)
    launch = detect_launcher()
    if launch.launcher == "torchrun":
        dist.init_process_group(backend=backend, timeout=timeout)  # env://
    elif launch.launcher == "slurm":
        dist.init_process_group(backend=backend, timeout=timeout, rank=launch.rank, world_size=launch.world_size,
                                init_method=f"tcp://{launch.master_addr}:{launch.master_port}")
    else:
        # A plain `python script.py`: a world of one, on a private port.
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://127.0.0.1:{_free_port()}",
            rank=0,
            world_size=1,
            timeout=timeout,
        )


def validate_layout(world_size: int, tensor_parallel: int, pipeline_parallel: int):
    if tensor_parallel < 1 or pipeline_parallel < 1:
        raise ConfigError("--tensor-model-parallel-size and --pipeline-model-parallel-size must be >= 1")
    if world_size % (tensor_parallel * pipeline_parallel):
        raise ConfigError(
            f"world size {world_size} is not divisible by --tensor-model-parallel-size "
            f"({tensor_parallel}) x --pipeline-model-parallel-size ({pipeline_parallel}); change "
            "the parallel sizes or the number of processes (torchrun --nproc-per-node)"
        )


def set_seed(seed: int):
    """Megatron-LM's seeding: the same seed on every rank except one offset per pipeline stage
    (so stages initialise different layers differently); megatron's tracker gives TP ranks
    their own dropout stream."""
    # megatron-core is imported where used, not at the top: this module must import (and report a
    # missing or unsupported megatron-core itself, check_megatron_core_version) without it
    from megatron.core import parallel_state, tensor_parallel

    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed, force_reset_rng=True)


# Older megatron-core releases lack APIs this package calls (megatron.core.tokenizers.utils,
# GPTDataset's 3-tuple document query, InferenceMode); newer ones are untested but may work.
MINIMUM_MEGATRON_CORE = (0, 19)
TESTED_MEGATRON_CORE_SERIES = (0, 19)


def check_megatron_core_for_cuda(version=None):
    """On a GPU nothing is patched, so only a release known to break is refused; an untested
    newer one gets a warning. (The CPU layer refuses every untested version: cpu_compat.)"""
    version = version or cpu_compat.megatron_core_version()
    series = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if series < MINIMUM_MEGATRON_CORE:
        raise ConfigError(
            f"megatron-core {version} is older than this package supports (>= "
            f"{'.'.join(map(str, MINIMUM_MEGATRON_CORE))}); install it with "
            "pip install 'megatron-core>=0.19,<0.20'")
    if series != TESTED_MEGATRON_CORE_SERIES:
        warnings.warn(f"megatron-core {version} is untested with this package (tested: "
                      f"{'.'.join(map(str, TESTED_MEGATRON_CORE_SERIES))}.x)", stacklevel=2)


def select_backend(requested=None):
    """("nccl", ()) with CUDA; otherwise ("gloo", names of the CPU patches now applied).
    `requested` (--distributed-backend) may choose gloo on CUDA; nccl needs CUDA."""
    if requested == "nccl" and not cuda_in_use():
        raise ConfigError("--distributed-backend nccl needs a CUDA device; use gloo (the CPU default)")
    if cuda_in_use():
        return requested or "nccl", ()
    return "gloo", tuple(cpu_compat.apply_all())


def initialize(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size=None,
    seed: int = 1234,
    timeout_minutes: float = 10.0,
    backend=None,
) -> Runtime:
    """Set up distributed state, megatron-core's parallel groups and the seeds. `backend` and
    `timeout_minutes`: --distributed-backend / --distributed-timeout-minutes."""
    if cuda_in_use():
        check_megatron_core_for_cuda()
    else:
        cpu_compat.check_megatron_core_version()  # before any work; select_backend patches
    local_rank = detect_launcher().local_rank
    backend, patches = select_backend(backend)
    if cuda_in_use():
        torch.cuda.set_device(local_rank)
    if device_check.requested() and not device_check.active():
        # after set_device: device() is this rank's GPU
        device_check.enter(device())  # PREALIGN_DEVICE_CHECK=1: the whole run, until shutdown()

    _init_process_group(backend, timeout_minutes)
    world_size = dist.get_world_size()
    validate_layout(world_size, tensor_model_parallel_size, pipeline_model_parallel_size)

    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
    )
    set_seed(seed)
    return Runtime(
        device=device(),
        backend=backend,
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        cpu_patches=patches,
    )


def shutdown():
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
    if device_check.requested():
        device_check.leave()
    # The run's model, optimizer and process groups sit in reference cycles: collect them now,
    # so that a process running many trainings (the demos, the studies) does not keep every
    # earlier run's gloo threads (about 60 a run) until the collector gets to them.
    gc.collect()
