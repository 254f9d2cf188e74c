"""Collectives of the alignment pass (all in the forward pass, on detached fp32 sums).

* Tensor parallelism: with sequence parallelism a TP rank holds a slice of the sequence, and the
  output embedding is vocab-parallel, so each rank's per-form sums are partial; one all-reduce
  completes them. (Cheaper than gathering the sequence first: [forms, h] instead of [s, b, h]
  per state, and exact since pooling is a sum.) The gradient w.r.t. a partial sum equals the
  gradient w.r.t. the full sum, so the backward pass needs no collective.
* Data parallelism: the contrastive loss takes its negatives from the global batch, so the
  per-form sums of all DP ranks are all-gathered. Every DP rank then computes the loss of the
  whole global batch and keeps the gradient of its own forms.
"""

from typing import Tuple

import torch
import torch.distributed as dist

from megatron.core import parallel_state


def complete_partial_sums(partial: torch.Tensor) -> torch.Tensor:
    """Sum per-form sums over the tensor-parallel group."""
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        partial = partial.clone()
        dist.all_reduce(partial, group=parallel_state.get_tensor_model_parallel_group())
    return partial


def gather_over_data_parallel(
    sums: torch.Tensor, groups: torch.Tensor, lengths: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, slice]:
    """All-gather ``sums [k, n, h]``, ``groups [n]`` and ``lengths [n]`` over the DP group.

    Ranks may hold different numbers of forms: blocks are padded to the largest. Returns
    (sums [k, N, h], groups [N], lengths [N], valid [N] bool, this rank's rows in N)."""
    group = parallel_state.get_data_parallel_group()
    size = dist.get_world_size(group)
    n = sums.shape[1]
    if size == 1:
        valid = torch.ones(n, dtype=torch.bool, device=sums.device)
        return sums, groups, lengths, valid, slice(0, n)
    counts = [torch.zeros(1, dtype=torch.int64, device=sums.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([n], dtype=torch.int64, device=sums.device), group=group)
    counts = [int(c) for c in counts]
    largest = max(counts)

    def padded(tensor, dim):
        pad_shape = list(tensor.shape)
        pad_shape[dim] = largest - n
        return torch.cat([tensor, tensor.new_zeros(pad_shape)], dim=dim).contiguous()

    metadata = torch.stack([padded(groups.long(), 0), padded(lengths.long(), 0)])
    gathered_metadata = [torch.empty_like(metadata) for _ in range(size)]
    dist.all_gather(gathered_metadata, metadata, group=group)
    local = padded(sums, 1)
    gathered_sums = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(gathered_sums, local, group=group)

    valid = torch.cat([torch.arange(largest, device=sums.device) < c for c in counts])
    rank = dist.get_rank(group)
    all_metadata = torch.cat(gathered_metadata, dim=1)
    return (
        torch.cat(gathered_sums, dim=1),
        all_metadata[0],
        all_metadata[1],
        valid,
        slice(rank * largest, rank * largest + n),
    )
