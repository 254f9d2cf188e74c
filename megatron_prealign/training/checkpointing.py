"""Distributed checkpoints through megatron-core's dist_checkpointing.

Layout (as Megatron-LM's): ``{save}/iter_0000100/`` holds one checkpoint (model, optimizer,
scheduler, per-rank RNG states, iteration and whatever run state the caller adds), and
``{save}/latest_checkpointed_iteration.txt`` names the newest complete one. Every save is
written into a new directory ``iter_N.partial`` and renamed to ``iter_N`` only after every rank
has finished; then the pointer is replaced (atomically). A complete checkpoint is never deleted
before its replacement is complete, so a run killed at any moment leaves a loadable checkpoint;
a resume whose pointer names a missing or incomplete directory falls back to the newest
complete one and says so (docs/reliability.md). Saves are synchronous: megatron-core's async path needs a
persistent worker and brings nothing on the CPU. Sharded tensors carry their global layout, so
a checkpoint saved at one TP x PP layout loads at another.
"""

import contextlib
import os
import pickle
import random
import shutil
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint import default_planner
from torch.distributed.checkpoint.api import CheckpointException

from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.validation import StrictHandling
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from megatron.core.utils import unwrap_model

from megatron_prealign import runtime
from megatron_prealign.errors import ConfigError, describe_os_error

LATEST = "latest_checkpointed_iteration.txt"
PARTIAL = ".partial"  # suffix of a save in progress (never loaded)
# Written by dist_checkpointing / torch.distributed.checkpoint only when a save finished. (Since
# megatron-core 0.19 the common state lives inside the torch_dist files; checkpoints of earlier
# releases also carry a common.pt, which 0.19 still reads.)
COMPLETE_MARKERS = ("metadata.json", ".metadata")
# Megatron-LM's default distributed-optimizer format. (The fully reshardable formats lost torch
# Adam's per-parameter `step` when tried, i.e. without TE / apex.)
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


# Model settings a checkpoint must share with the run (or evaluation) loading it.
ARCHITECTURE_KEYS = ("family", "num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
                     "ffn_hidden_size", "vocab_size", "max_position_embeddings")


def architecture(model_args) -> dict:
    """What a checkpoint records (run_state["architecture"]): the model's own description, with
    the position table's effective size."""
    return model_args.architecture() | {
        "max_position_embeddings": model_args.max_position_embeddings or model_args.seq_length}


def config_record(config) -> dict:
    """What a checkpoint records of the run's TrainConfig (run_state["config"]): every setting
    under its flag name with underscores (plain values and lists), as Megatron-LM keeps its
    args in a checkpoint. Checkpoints written before this key existed have none; nothing reads it
    back on resume (the flags of the resuming run rule, the architecture is checked apart)."""
    return config.flat()


def saved_config(directory: str) -> Optional[dict]:
    """The settings a checkpoint directory (``iter_N``) recorded (config_record), or None."""
    return read_run_state(directory).get("config")


def check_architecture(saved: Optional[dict], expected: dict, where: str, other: str = "run",
                       error=ConfigError):
    """Raise `error` naming every key where the checkpoint's architecture differs from
    `expected`; `where` names it ("--load DIR"). Keys expected as None, or absent from an older
    checkpoint, are not compared."""
    if not saved:
        raise error(f"{where} records no architecture (not written by megatron_prealign's "
                    "training driver)")
    different = {k: (saved[k], v) for k, v in expected.items()
                 if k in ARCHITECTURE_KEYS and v is not None and saved.get(k) is not None and saved[k] != v}
    if different:
        details = ", ".join(f"{k}: checkpoint {a} vs {other} {b}" for k, (a, b) in different.items())
        raise error(f"{where} holds another architecture ({details}); change the model flags "
                    f"to match or start without {where.split()[0]}")


def checkpoint_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def latest_iteration(root: str) -> Optional[int]:
    """The iteration named by `root`'s pointer file, or None when there is none."""
    path = os.path.join(root, LATEST)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    if not text.isdigit():
        raise ConfigError(f"{path} should hold an iteration number, found {text!r}")
    return int(text)


def incomplete_reason(directory: str) -> Optional[str]:
    """None when `directory` holds a finished save, else what is wrong with it."""
    if not os.path.isdir(directory):
        return "it does not exist"
    missing = [name for name in COMPLETE_MARKERS if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        return f"{', '.join(missing)} missing: an interrupted save"
    return None


def complete_iterations(root: str) -> list:
    """Iterations under `root` with a finished checkpoint, ascending."""
    found = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.startswith("iter_") and name[5:].isdigit() and incomplete_reason(os.path.join(root, name)) is None:
            found.append(int(name[5:]))
    return sorted(found)


def resolve_iteration(root: str, requested: Optional[int] = None, announce=print,
                      flag: str = "--load-iteration", action: str = "resume") -> Optional[int]:
    """The iteration to resume from: `requested` (--load-iteration) if it is complete, else the
    pointer's, else (pointer unreadable or naming an incomplete save) the newest complete one,
    announced. None when `root` holds no checkpoint at all. `flag` / `action`: the wording of
    another tool's messages (evaluation, export)."""
    complete = complete_iterations(root)
    if requested is not None:
        reason = incomplete_reason(checkpoint_dir(root, requested))
        if reason:
            raise ConfigError(f"{flag} {requested}: {checkpoint_dir(root, requested)} cannot be "
                              f"loaded ({reason}); complete iterations in {root}: {complete or 'none'}")
        return requested
    where = os.path.join(root, LATEST)
    try:
        latest = latest_iteration(root)
        problem = None if latest is None else incomplete_reason(checkpoint_dir(root, latest))
    except ConfigError as error:
        latest, problem = -1, str(error).removeprefix(f"{where} ")  # named once, below
    if latest is None and not complete:
        return None
    if latest is not None and problem is None:
        return latest
    if latest is None:
        problem = "it is missing"
    elif latest >= 0:
        problem = f"it names {checkpoint_dir(root, latest)}, but {problem}"
    if not complete:
        raise ConfigError(f"cannot {action} from {root}: {where}: {problem}; no complete checkpoint "
                          f"(iter_*/ with {', '.join(COMPLETE_MARKERS)}) to fall back to")
    if announce:
        verb = "resuming from" if action == "resume" else "using"
        announce(f"warning: {where}: {problem}; {verb} the newest complete checkpoint, iteration "
                 f"{complete[-1]} (choose another with {flag})", flush=True)
    return complete[-1]


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
    run_state = {"iteration": iteration, "layout": _layout(),
                 "data_parallel_size": parallel_state.get_data_parallel_world_size(),
                 "distributed_optimizer": optimizer is not None and _has_distributed_optimizer(optimizer),
                 **(run_state or {})}
    directory = checkpoint_dir(root, iteration)
    staging = directory + PARTIAL  # the same name on every rank; never a complete checkpoint
    try:
        _on_rank_zero(_prepare_staging, staging)
        state = _sharded_state(chunks, optimizer, scheduler, run_state, with_rng=True, is_loading=False)
        dist_checkpointing.save(state, staging)
        dist.barrier()
        _on_rank_zero(_publish, root, staging, directory, iteration)
    except Exception as error:
        if _is_no_space(error):
            raise ConfigError(describe_os_error(OSError(28, "No space left on device"), staging)
                              + f"; the previous checkpoint in {root} is untouched") from error
        raise
    return directory


def _on_rank_zero(step, *args) -> None:
    """``step(*args)`` on rank 0, then a barrier that tells every rank whether it failed: the
    other ranks raise too instead of waiting at their next collective (outside torchrun, which
    would stop them, they would hang until the process group's timeout)."""
    error = None
    if dist.get_rank() == 0:
        try:
            step(*args)
        except Exception as exc:  # re-raised below, after the other ranks know
            error = exc
    failed = torch.tensor([int(error is not None)], dtype=torch.int32, device=runtime.device())
    dist.all_reduce(failed)
    if error is not None:
        raise error
    if failed.item():
        raise RuntimeError(f"checkpoint save: {step.__name__.strip('_')} failed on rank 0 "
                           "(its error is in rank 0's log)")


def _prepare_staging(staging: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)  # left by a save that was killed
    os.makedirs(staging)


def _publish(root: str, staging: str, directory: str, iteration: int):
    """Rename the finished save into place, then move the pointer (rank 0)."""
    replaced = directory + ".replaced"
    if os.path.isdir(directory):  # the same iteration saved again: swap, delete the old one last
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(directory, replaced)
    os.rename(staging, directory)
    pointer = os.path.join(root, LATEST)
    with open(pointer + ".tmp", "w") as f:
        f.write(str(iteration))
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer + ".tmp", pointer)
    shutil.rmtree(replaced, ignore_errors=True)


def _is_no_space(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain (torch's checkpoint writer wraps per-rank failures)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == 28 or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def load_checkpoint(
    root: str,
    chunks,
    optimizer=None,
    scheduler=None,
    iteration: Optional[int] = None,
    load_rng: bool = True,
) -> dict:
    """Load model (and optimizer, scheduler, RNG) state in place; return the run state.
    `iteration` None: the pointer's, or the newest complete one (see resolve_iteration)."""
    requested = iteration
    first = not dist.is_initialized() or dist.get_rank() == 0
    iteration = resolve_iteration(root, requested, announce=print if first else None)
    if iteration is None:
        raise ConfigError(f"no {LATEST} and no checkpoint under {root}: nothing to resume from")
    directory = checkpoint_dir(root, iteration)
    saved = read_run_state(directory)
    # RNG states are per rank: restore them only into the layout that saved them.
    saved_dp = saved.get("data_parallel_size")
    same_layout = saved.get("layout") == _layout() and saved_dp in (None, parallel_state.get_data_parallel_world_size())
    with_rng = load_rng and same_layout
    if load_rng and not same_layout and first:
        print(f"note: {directory} was saved at (PP, TP, DP) = ({', '.join(map(str, saved.get('layout', [])))}, "
              f"{saved_dp}); this run's layout differs, so the random state comes from --seed "
              "instead (resumption is not bit-exact)", flush=True)
    if optimizer is not None:
        _check_optimizer_kind(saved, optimizer, directory)
    if optimizer is not None and saved.get("layout") != _layout() and _has_distributed_optimizer(optimizer):
        raise ConfigError(
            f"{directory} was saved with (PP, TP) = {saved.get('layout')}; the "
            "distributed optimizer's state (Megatron-LM's default dp_reshardable format) reshards "
            "only across data parallelism. Load the weights alone with --no-load-optim, or keep "
            "the saved TP and PP sizes."
        )
    if optimizer is not None:
        _ensure_optimizer_state(optimizer)
    state = _sharded_state(chunks, optimizer, scheduler, {}, with_rng=with_rng, is_loading=True)
    # A checkpoint of local layers (import-hf's, or a CPU run's) lacks the `_extra_state` (fp8
    # metadata) of Transformer Engine layers: those start fresh. Anything else missing fails.
    # (megatron-core calls what the checkpoint lacks "unexpected", what it holds beyond "missing")
    loaded, _, absent = dist_checkpointing.load(state, directory, strict=StrictHandling.RETURN_ALL)
    missing = sorted(key for key in absent if not _is_extra_state(key))
    if missing:
        raise ConfigError(f"{directory} lacks {len(missing)} tensor(s) this run needs, e.g. {missing[:3]}")
    result = unwrap_model(chunks[0]).load_state_dict(loaded["model"], strict=False)
    unloaded = [key for key in result.missing_keys + result.unexpected_keys if not _is_extra_state(key)]
    if unloaded:
        raise ConfigError(f"{directory}: the model's and the checkpoint's tensors differ: {unloaded[:3]}")
    if optimizer is not None:
        # no_grad: with fp32 weights the distributed optimizer's main params are views of the
        # model's leaf parameters, which its dp_reshardable loader copies into in place.
        with torch.no_grad():
            optimizer.load_state_dict(loaded["optimizer"])
        _restore_adam_steps(optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(loaded["scheduler"])
    if with_rng and len(loaded["rng_state"]) == parallel_state.get_data_parallel_world_size():
        _set_rng_state(loaded["rng_state"][parallel_state.get_data_parallel_rank()])
    return loaded["run_state"]


def _is_extra_state(key: str) -> bool:
    return key.split("/")[0].endswith("._extra_state") or key == "_extra_state"


def _check_optimizer_kind(saved: dict, optimizer, directory: str):
    """Megatron's distributed and plain optimizers store different state: say so instead of
    failing inside the loader with a KeyError."""
    if "distributed_optimizer" not in saved:
        return  # saved before this was recorded: the loader's own error stands
    if saved["distributed_optimizer"] != _has_distributed_optimizer(optimizer):
        def describe(flag):
            return "with --use-distributed-optimizer" if flag else "without --use-distributed-optimizer"

        raise ConfigError(
            f"{directory} was saved {describe(saved['distributed_optimizer'])} and this run is "
            f"{describe(not saved['distributed_optimizer'])}: their optimizer states differ. Resume "
            f"{describe(saved['distributed_optimizer'])}, or load the weights (and schedule) alone "
            "with --no-load-optim.")


def _has_distributed_optimizer(optimizer) -> bool:
    return any(
        isinstance(inner, DistributedOptimizer)
        for inner in getattr(optimizer, "chained_optimizers", [optimizer])
    )


# The two Adam workarounds below are not CPU-only, so they are not in cpu_compat: megatron-core
# falls back to torch's Adam whenever neither Transformer Engine nor apex is installed
# (distrib_optimizer.HAVE_APEX_OR_TE is False), on a GPU as well (transformer_impl "local").
def _ensure_optimizer_state(optimizer):
    """megatron-core's DistributedOptimizer.state_dict() needs Adam's `step` entries, which a
    torch (non-TE, non-apex) Adam only creates on its first step; sharded_state_dict(is_loading)
    asks for state_dict() before creating dummy state itself. Create it first, the way
    megatron-core does; the load then overwrites it (and the model weights are loaded after)."""
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


# What the .metadata pickle of a torch distributed checkpoint names: plain data classes, enums,
# torch.Size, dtypes and layouts. Anything else (os.system, builtins.eval, ...) is an attack.
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
        "BytesStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.planner": {
        "SavePlan", "LoadPlan", "WriteItem", "ReadItem", "WriteItemType", "LoadItemType",
        "TensorWriteData"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "collections": {"OrderedDict"},
    "pathlib": {"PosixPath"},  # StorageMeta's checkpoint_id when saved from a path
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        allowed = name in _METADATA_GLOBALS.get(module, ()) or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        if not allowed:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def verify_metadata(directory: str) -> None:
    """Read ``directory/.metadata`` with an unpickler that builds only checkpoint metadata,
    before torch's reader unpickles it without limits. Raises ConfigError naming what it holds."""
    path = os.path.join(directory, ".metadata")
    try:
        with open(path, "rb") as handle:
            _MetadataUnpickler(handle).load()
    except _ForbiddenGlobal as error:
        raise ConfigError(f"{path} names {error}, which checkpoint metadata never needs: not loaded "
                          "(unpickling it could run code). Load only checkpoints you trust; for one "
                          "you do, pass --trusted-checkpoint") from None
    except Exception as error:  # truncated or corrupt: any error of the unpickler
        raise ConfigError(f"{path} is unreadable ({type(error).__name__}: {error}): a truncated or "
                          "corrupt checkpoint?") from None


@contextlib.contextmanager
def untrusted_items_weights_only():
    """torch's distributed-checkpoint reader unpickles every non-tensor item (the common state,
    the RNG states) with ``torch.load(weights_only=False)``: a crafted checkpoint runs code there
    even when its ``.metadata`` is clean. Inside this context those items are read with
    ``weights_only=True`` instead (megatron-core registers the classes its state needs)."""
    planner = default_planner.DefaultLoadPlanner
    original = planner.load_bytes

    def load_bytes(self, read_item, value):
        item = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            default_planner.set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], item)
        else:
            self.state_dict[read_item.dest_index.fqn] = item

    planner.load_bytes = load_bytes
    try:
        yield
    finally:
        planner.load_bytes = original


def read_run_state(directory: str) -> dict:
    """The run state saved with a checkpoint, without loading any tensor."""
    return dist_checkpointing.load_common_state_dict(directory)["run_state"]


def read_run_state_or_explain(directory: str) -> dict:
    """read_run_state, with a truncated or corrupt file as a ConfigError (torch's reader raises
    CheckpointException, a BaseException, which would escape as a traceback)."""
    try:
        return read_run_state(directory)
    except (Exception, CheckpointException) as error:
        raise ConfigError(f"cannot read the run state of {directory} ({type(error).__name__}): a "
                          "truncated or corrupt checkpoint? Choose another with --load-iteration") from None
