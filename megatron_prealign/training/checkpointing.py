"""Distributed checkpoints through megatron-core's dist_checkpointing.

Layout (as Megatron-LM's): ``{save}/iter_0000100/`` holds one checkpoint (model, optimizer,
scheduler, per-rank RNG states, iteration and whatever run state the caller adds), and
``{save}/latest_checkpointed_iteration.txt`` names the newest complete one. The pointer is
written (atomically) only after every rank has finished writing, so a run killed mid-save
resumes from the previous checkpoint. Saves are synchronous: megatron-core's async path needs a
persistent worker and brings nothing on the CPU. Sharded tensors carry their global layout, so
a checkpoint saved at one TP x PP layout loads at another.
"""

import os
import random
import shutil
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.utils import unwrap_model

LATEST = "latest_checkpointed_iteration.txt"
# Megatron-LM's default distributed-optimizer format. (megatron-core 0.16.1's fully reshardable
# formats fail with torch's Adam, i.e. without TE / apex: its per-parameter `step` is lost.)
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def checkpoint_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def latest_iteration(root: str) -> Optional[int]:
    """The iteration of the newest complete checkpoint under `root`, or None."""
    path = os.path.join(root, LATEST)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    if not text.isdigit():
        raise ValueError(f"{path} should hold an iteration number, found {text!r}")
    return int(text)


def _rng_state() -> dict:
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": torch.tensor(python_state[1], dtype=torch.int64),
        "python_version": python_state[0],
        "python_gauss": python_state[2],
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "numpy_has_gauss": int(numpy_state[3]),
        "numpy_gauss": float(numpy_state[4]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def _set_rng_state(state: dict):
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _sharded_rng_state() -> ShardedObject:
    # Every rank's RNG state matters (dropout differs per TP rank), so gather over DP and shard
    # by (PP, TP) as Megatron-LM does; a resharded load falls back to re-seeding.
    dp_group = parallel_state.get_data_parallel_group()
    states = [None] * dist.get_world_size(dp_group)
    dist.all_gather_object(states, _rng_state(), group=dp_group)
    return ShardedObject(
        "rng_state",
        states,
        (
            parallel_state.get_pipeline_model_parallel_world_size(),
            parallel_state.get_tensor_model_parallel_world_size(),
        ),
        (
            parallel_state.get_pipeline_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_rank(),
        ),
        replica_id=parallel_state.get_data_parallel_rank(),
    )


def _sharded_state(chunks, optimizer, scheduler, run_state: dict, with_rng: bool, is_loading: bool) -> dict:
    model = unwrap_model(chunks[0])
    model_state = model.sharded_state_dict()
    state = {"model": model_state, "run_state": dict(run_state)}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(
            model_state, is_loading=is_loading, metadata=OPTIMIZER_METADATA
        )
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if with_rng:
        state["rng_state"] = _sharded_rng_state()
    return state


def save_checkpoint(root: str, iteration: int, chunks, optimizer=None, scheduler=None, run_state=None):
    """Save everything needed to resume at `iteration`; move the `latest` pointer last."""
    if len(chunks) != 1:
        raise NotImplementedError("virtual pipeline stages (several model chunks) are not supported")
    run_state = {"iteration": iteration, "layout": _layout(), **(run_state or {})}
    directory = checkpoint_dir(root, iteration)
    if dist.get_rank() == 0:
        if os.path.isdir(directory):  # a partial save of this iteration by a killed run
            shutil.rmtree(directory)
        os.makedirs(directory)
    dist.barrier()
    state = _sharded_state(chunks, optimizer, scheduler, run_state, with_rng=True, is_loading=False)
    dist_checkpointing.save(state, directory)
    dist.barrier()
    if dist.get_rank() == 0:
        pointer = os.path.join(root, LATEST)
        with open(pointer + ".tmp", "w") as f:
            f.write(str(iteration))
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer + ".tmp", pointer)
    dist.barrier()
    return directory


def load_checkpoint(
    root: str,
    chunks,
    optimizer=None,
    scheduler=None,
    iteration: Optional[int] = None,
    load_rng: bool = True,
) -> dict:
    """Load model (and optimizer, scheduler, RNG) state in place; return the run state."""
    if iteration is None:
        iteration = latest_iteration(root)
        if iteration is None:
            raise FileNotFoundError(f"no {LATEST} under {root}: nothing to resume from")
    directory = checkpoint_dir(root, iteration)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    # RNG states are per (PP, TP) rank: restore them only into the layout that saved them.
    same_layout = read_run_state(directory).get("layout") == _layout()
    with_rng = load_rng and same_layout
    if optimizer is not None and not same_layout and _has_distributed_optimizer(optimizer):
        raise ValueError(
            f"{directory} was saved with (PP, TP) = {read_run_state(directory).get('layout')}; the "
            "distributed optimizer's state (Megatron-LM's default dp_reshardable format) reshards "
            "only across data parallelism. Load the weights alone with --no-load-optim, or keep "
            "the saved TP and PP sizes."
        )
    if optimizer is not None:
        _ensure_optimizer_state(optimizer)
    state = _sharded_state(chunks, optimizer, scheduler, {}, with_rng=with_rng, is_loading=True)
    loaded = dist_checkpointing.load(state, directory)
    unwrap_model(chunks[0]).load_state_dict(loaded["model"])
    if optimizer is not None:
        # no_grad: with fp32 weights the distributed optimizer's main params are views of the
        # model's leaf parameters, which its dp_reshardable loader copies into in place.
        with torch.no_grad():
            optimizer.load_state_dict(loaded["optimizer"])
        _restore_adam_steps(optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(loaded["scheduler"])
    if with_rng:
        _set_rng_state(loaded["rng_state"][parallel_state.get_data_parallel_rank()])
    return loaded["run_state"]


def _has_distributed_optimizer(optimizer) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(
        isinstance(inner, DistributedOptimizer)
        for inner in getattr(optimizer, "chained_optimizers", [optimizer])
    )


def _ensure_optimizer_state(optimizer):
    """megatron-core's DistributedOptimizer.state_dict() needs Adam's `step` entries, which a
    torch (non-TE, non-apex) Adam only creates on its first step; sharded_state_dict(is_loading)
    asks for state_dict() before creating dummy state itself. Create it first, the way
    megatron-core does; the load then overwrites it (and the model weights are loaded after)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        if isinstance(inner, DistributedOptimizer) and not inner.optimizer.state:
            inner._init_optimizer_states_with_dummy_values()


def _restore_adam_steps(optimizer):
    """Without TE / apex, DistributedOptimizer.load_state_dict gives every parameter's torch Adam
    state one shared `step` tensor (which Adam then increments once per parameter each step) and
    its dp_reshardable loader overwrites it with a stale value. The step it saved is kept in the
    param groups: give each parameter its own copy of that."""
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_optimizer = getattr(inner, "optimizer", None)
        for group in getattr(torch_optimizer, "param_groups", []):
            if "step" not in group:
                continue
            for param in group["params"]:
                state = torch_optimizer.state.get(param, {})
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = torch.tensor(float(group["step"]), dtype=state["step"].dtype)


def _layout() -> list:
    return [
        parallel_state.get_pipeline_model_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_world_size(),
    ]


def read_run_state(directory: str) -> dict:
    """The run state saved with a checkpoint, without loading any tensor."""
    return dist_checkpointing.load_common_state_dict(directory)["run_state"]
