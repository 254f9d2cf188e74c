"""Full (unsharded) tensors of a model sharded over any TP x PP x DP layout.

Built on the model's `sharded_state_dict()`, the same description megatron-core's
dist_checkpointing uses to reshard, so the layout rules (fused QKV, SwiGLU's two halves, tied
embeddings under PP, global layer numbers) come from megatron-core rather than being restated
here. Used by the tests to compare distributed runs with a single-process reference.
Meant for small models: every rank ends up with every full tensor.
"""

import contextlib
from typing import Dict, List

import torch
import torch.distributed as dist

from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories, is_main_replica
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.distributed.param_and_grad_buffer import shard_buffer
from megatron.core.utils import unwrap_model


@contextlib.contextmanager
def _params_viewed_as_grads(chunks):
    """Temporarily make each parameter's data its accumulated gradient (DDP's main_grad)."""
    saved = []
    for chunk in chunks:
        for param in chunk.parameters():
            grad = getattr(param, "main_grad", None)
            if grad is None:
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
            saved.append((param, param.data))
            param.data = grad.detach().to(param.dtype).view_as(param)
    try:
        yield
    finally:
        for param, data in saved:
            param.data = data


def _complete_sharded_grads(chunks):
    """With the distributed optimizer each DP rank holds only its reduce-scattered shard of the
    grad buffer; all-gather the shards so every rank's main_grad is the full reduced gradient.
    (Call after the backward pass; the buffers are zeroed again before the next one.)"""
    for chunk in chunks:
        ddp_config = getattr(chunk, "ddp_config", None)
        if ddp_config is None or not ddp_config.use_distributed_optimizer:
            continue
        for group in chunk.bucket_groups + chunk.expert_parallel_bucket_groups:
            size = group.intra_distributed_optimizer_instance_size
            rank = group.intra_distributed_optimizer_instance_rank
            for bucket in group.buckets:
                shards = shard_buffer(bucket.grad_data, size)
                dist.all_gather(
                    shards, shards[rank].clone(), group=group.intra_distributed_optimizer_instance_group
                )


def _local_shards(chunks) -> List[tuple]:
    shards = []
    for chunk in unwrap_model(list(chunks)):
        sharded = chunk.sharded_state_dict()
        apply_factories(sharded)
        for item in nested_values(sharded):
            if not isinstance(item, ShardedTensor) or not is_main_replica(item.replica_id):
                continue
            if item.key.endswith("_extra_state"):
                continue
            shards.append(
                (item.key, item.global_shape, item.global_offset, item.data.detach().float().cpu().clone())
            )
    return shards


def gather_full_tensors(chunks, what: str = "param") -> Dict[str, torch.Tensor]:
    """Every full tensor of the model (fp32, CPU) on every rank. `what` is "param" or "grad"."""
    if what not in ("param", "grad"):
        raise ValueError("what must be 'param' or 'grad'")
    if what == "grad":
        _complete_sharded_grads(chunks)
    context = _params_viewed_as_grads(chunks) if what == "grad" else contextlib.nullcontext()
    with context:
        local = _local_shards(chunks)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, local)
    full = {}
    for shards in everyone:
        for key, global_shape, global_offset, data in shards:
            target = full.setdefault(key, torch.zeros(global_shape))
            # Leading axes beyond the local tensor's are prepended ones (e.g. stacked layers).
            view = target
            extra = len(global_shape) - data.dim()
            for axis, offset in enumerate(global_offset):
                length = 1 if axis < extra else data.shape[axis - extra]
                view = view.narrow(axis, offset, length)
            view.copy_(data.view(view.shape))
    return full
