"""Alignment metrics for logging: per layer state, the mean cosine similarity of aligned pairs
(two forms of the same word) and of random pairs (forms of different words), the quantity of
the paper's Figure 5, plus the per-state contrastive loss.

Statistics are accumulated as sums and counts over the alignment microbatches of a step and
reduced over pipeline stages (each stage knows only its own layers) by :meth:`reduce`; they are
already summed over data-parallel ranks (step.py) and identical on tensor-parallel ranks.
"""

import dataclasses
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron_prealign import runtime


def pair_similarity_sums(
    vectors: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor, rows: slice = slice(None)
) -> torch.Tensor:
    """[..., 4] fp64 for ``vectors [..., N, h]``: (sum of cosines of aligned pairs, their count,
    same for random pairs), over ordered pairs (i, j), i != j, both valid, i in ``rows`` (sums
    over ranks' rows add up)."""
    normalized = F.normalize(vectors.detach().float(), dim=-1)
    cosine = (normalized[..., rows, :] @ normalized.transpose(-1, -2)).double()
    n = vectors.shape[-2]
    row_index = torch.arange(n, device=vectors.device)[rows]
    pair_valid = valid[rows].unsqueeze(1) & valid.unsqueeze(0)
    pair_valid &= row_index.unsqueeze(1) != torch.arange(n, device=vectors.device).unsqueeze(0)
    same = groups[rows].unsqueeze(1) == groups.unsqueeze(0)
    aligned, random = pair_valid & same, pair_valid & ~same
    counts = torch.stack([aligned.sum(), random.sum()]).double().expand(*cosine.shape[:-2], 2)
    return torch.stack(
        [(cosine * aligned).sum((-1, -2)), counts[..., 0], (cosine * random).sum((-1, -2)), counts[..., 1]],
        dim=-1,
    )


# Rows of AlignmentStatistics.sums, per layer state.
LOSS, MICROBATCHES, ANCHORS, ALIGNED_SUM, ALIGNED_COUNT, RANDOM_SUM, RANDOM_COUNT = range(7)


@dataclasses.dataclass
class AlignmentStatistics:
    """Sums over a step's alignment microbatches, one column per layer state (0 = input
    embedding, 1..L-1 = transformer layer outputs, L = final-norm output, L+1 = output
    embedding)."""

    num_states: int
    sums: torch.Tensor = None  # [7, num_states] fp64, on the model's device while accumulating

    def __post_init__(self):
        if self.sums is None:
            self.sums = torch.zeros(7, self.num_states, dtype=torch.float64, device=runtime.device())

    def add(self, state: int, loss: torch.Tensor, anchors: torch.Tensor, pair_sums: torch.Tensor):
        """Tensors in, no host synchronisation."""
        if self.sums.device != loss.device:
            self.sums = self.sums.to(loss.device)
        column = self.sums[:, state]
        column[LOSS] += loss.detach().double()
        column[MICROBATCHES] += 1
        column[ANCHORS] += anchors.double()
        column[ALIGNED_SUM:] += pair_sums.double()

    def reduce(self, group=None) -> "AlignmentStatistics":
        """Sum over ``group`` (the pipeline-parallel group; stages own disjoint states); the
        result stays on the device (no host sync: read it with the methods below)."""
        sums = self.sums.clone()
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(sums, group=group)
        return AlignmentStatistics(self.num_states, sums)

    def total_loss_tensor(self) -> torch.Tensor:
        """Sum of the per-state losses, on the device (for a non-finite check without a sync)."""
        return self.sums[LOSS].sum()

    @staticmethod
    def _ratio(numerator, denominator) -> List[Optional[float]]:
        return [float(n / d) if d > 0 else None for n, d in zip(numerator, denominator)]

    def per_state_loss(self) -> List[Optional[float]]:
        return self._ratio(self.sums[LOSS], self.sums[MICROBATCHES])

    def loss(self) -> Optional[float]:
        """Eq. 3, averaged over the step's alignment microbatches: sum over states."""
        values = self.per_state_loss()
        if any(v is None for v in values):
            return None
        return float(sum(values))

    def aligned_similarity(self) -> List[Optional[float]]:
        return self._ratio(self.sums[ALIGNED_SUM], self.sums[ALIGNED_COUNT])

    def random_similarity(self) -> List[Optional[float]]:
        return self._ratio(self.sums[RANDOM_SUM], self.sums[RANDOM_COUNT])

    def as_log_dict(self) -> Dict[str, object]:
        """JSON-ready (None where undefined, never NaN): the keys of ``--log-json``."""
        if self.sums.device.type != "cpu":
            return AlignmentStatistics(self.num_states, self.sums.cpu()).as_log_dict()
        return {
            "alignment_loss": self.loss(),
            "alignment_loss_per_layer": self.per_state_loss(),
            "alignment_similarity": self.aligned_similarity(),
            "random_similarity": self.random_similarity(),
            "alignment_anchors": [int(a) for a in self.sums[ANCHORS].tolist()],
        }
