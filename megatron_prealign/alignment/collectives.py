"""Collectives of the alignment pass (all in the forward pass, on detached fp32 sums).

* Tensor parallelism: with sequence parallelism a TP rank holds a slice of the sequence, and the
  output embedding is vocab-parallel, so each rank's per-form sums are partial; one all-reduce
  completes them. (Cheaper than gathering the sequence first: [forms, h] instead of [s, b, h]
  per state, and exact since pooling is a sum.) The gradient w.r.t. a partial sum equals the
  gradient w.r.t. the full sum, so the backward pass needs no collective.
* Data parallelism: the contrastive loss takes its negatives from the global batch, so the
  per-form sums of all DP ranks are all-gathered. Each DP rank computes the loss terms of its
  own anchors only (against all forms: O(n N h) rather than O(N^2 h) per rank), then the
  gradients w.r.t. all forms are summed over the DP group and each rank keeps its own rows
  (one reduce-scatter), and the small statistics are all-reduced.
"""

import dataclasses
from typing import Optional

import torch
import torch.distributed as dist

from megatron.core import parallel_state


def complete_partial_sums(partial: torch.Tensor) -> torch.Tensor:
    """Sum per-form sums over the tensor-parallel group."""
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        partial = partial.clone()
        dist.all_reduce(partial, group=parallel_state.get_tensor_model_parallel_group())
    return partial


@dataclasses.dataclass
class GlobalBatch:
    """The per-form sums of the whole data-parallel batch, blocks of ``block`` rows per rank
    (padded; ``valid`` marks real forms)."""

    sums: torch.Tensor  # [k, N, h]
    groups: torch.Tensor  # [N]
    lengths: torch.Tensor  # [N]
    valid: torch.Tensor  # [N] bool
    mine: slice  # this rank's rows
    block: int


def gather_over_data_parallel(sums: torch.Tensor, groups: torch.Tensor, lengths: torch.Tensor,
                              max_forms: Optional[int] = None) -> GlobalBatch:
    """All-gather ``sums [k, n, h]``, ``groups [n]`` and ``lengths [n]`` over the DP group.
    Ranks may hold different numbers of forms: blocks are padded.

    With ``max_forms`` (a bound on any rank's forms, known when the pass is built) every block
    has that many rows and ``valid`` comes from the gathered lengths (a real form has at least
    one token), so nothing is read back to the host. Without it the blocks are padded to the
    largest count, which is all-gathered and read on the host first (a synchronisation on CUDA)."""
    group = parallel_state.get_data_parallel_group()
    size = dist.get_world_size(group)
    n = sums.shape[1]
    if size == 1:
        valid = torch.ones(n, dtype=torch.bool, device=sums.device)
        return GlobalBatch(sums, groups, lengths, valid, slice(0, n), n)
    if max_forms is not None:
        if n > max_forms:  # host ints: no synchronisation
            raise ValueError(f"an alignment microbatch holds {n} word forms, more than the bound "
                             f"{max_forms} the alignment pass was built with (max_forms_per_rank)")
        largest = int(max_forms)
    else:
        counts = [torch.zeros(1, dtype=torch.int64, device=sums.device) for _ in range(size)]
        dist.all_gather(counts, torch.tensor([n], dtype=torch.int64, device=sums.device), group=group)
        largest = max(int(c) for c in counts)

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

    all_metadata = torch.cat(gathered_metadata, dim=1)
    valid = all_metadata[1] > 0  # padding rows have length 0, every form at least one token
    rank = dist.get_rank(group)
    return GlobalBatch(
        torch.cat(gathered_sums, dim=1), all_metadata[0], all_metadata[1], valid,
        slice(rank * largest, rank * largest + n), largest,
    )


def sum_gradients_over_data_parallel(gradient: torch.Tensor, batch: GlobalBatch) -> torch.Tensor:
    """[k, N, h] gradients of this rank's loss terms w.r.t. every form -> [k, n, h] gradients of
    the global loss w.r.t. this rank's forms (summed over the DP group, reduce-scattered)."""
    group = parallel_state.get_data_parallel_group()
    size = dist.get_world_size(group)
    if size == 1:
        return gradient[:, batch.mine]
    by_rank = gradient.transpose(0, 1).contiguous()  # [N, k, h]: rank blocks along dim 0
    mine = torch.empty_like(by_rank[: batch.block])
    dist.reduce_scatter_tensor(mine, by_rank, group=group)
    n = batch.mine.stop - batch.mine.start
    return mine[:n].transpose(0, 1)


def sum_over_data_parallel(values: torch.Tensor) -> torch.Tensor:
    group = parallel_state.get_data_parallel_group()
    if dist.get_world_size(group) > 1:
        values = values.clone()
        dist.all_reduce(values, group=group)
    return values
