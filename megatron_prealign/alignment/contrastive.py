"""The supervised contrastive loss of one layer (PreAlign Eq. 1-2; Khosla et al. 2020, L_out).

For pooled form vectors z_1..z_N with groups g_1..g_N and temperature tau:

    s(i, j)  = cos(z_i, z_j) / tau                                            (Eq. 1)
    P(i)     = { p != i : g_p = g_i }          (the other forms of i's word)
    l_i      = -1/|P(i)| * sum_{p in P(i)} log( exp s(i,p) / sum_{a != i} exp s(i,a) )
    L        = mean of l_i over the anchors, i.e. the forms with |P(i)| > 0   (Eq. 2)

A form whose group has no other form in the batch is not an anchor (it has no positive), but it
still serves as a negative for the others. A batch without any anchor has loss 0 (no NaN).
The layer losses are summed over layers (Eq. 3) by the caller.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.1


def check_temperature(temperature: float) -> float:
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"--alignment-temperature must be > 0, got {temperature}")
    return float(temperature)


def anchor_terms(
    vectors: torch.Tensor,
    groups: torch.Tensor,
    temperature: float,
    valid: torch.Tensor,
    rows: slice,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(l_i, i is an anchor) for the rows ``rows`` of ``vectors [..., N, h]`` (leading dims:
    several layer states at once), against all N forms; l_i = 0 for non-anchors. Computed in
    fp32, without data-dependent shapes (no host synchronisation on a GPU)."""
    check_temperature(temperature)
    n = vectors.shape[-2]
    normalized = F.normalize(vectors.float(), dim=-1)
    row_index = torch.arange(n, device=vectors.device)[rows]
    row_valid, row_groups = valid[rows], groups[rows]
    not_self = row_index.unsqueeze(1) != torch.arange(n, device=vectors.device).unsqueeze(0)
    pair_valid = row_valid.unsqueeze(1) & valid.unsqueeze(0) & not_self
    positives = (row_groups.unsqueeze(1) == groups.unsqueeze(0)) & pair_valid
    num_positives = positives.sum(dim=1)
    anchors = num_positives > 0
    logits = normalized[..., rows, :] @ normalized.transpose(-1, -2) / temperature
    # An anchor row keeps at least one finite logit (its positive). Rows of non-anchors are
    # zeroed instead of masked: they do not contribute, and a row of -inf would turn into NaN
    # in the log-softmax's backward pass.
    logits = torch.where(
        anchors.unsqueeze(1),
        logits.masked_fill(~pair_valid, float("-inf")),
        torch.zeros_like(logits),
    )
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    positive_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=-1)
    per_anchor = -positive_log_prob / num_positives.clamp(min=1)
    return per_anchor * anchors, anchors


def count_anchors(groups: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Number of valid forms whose group has another valid form (O(N log N), no N x N). Sorted
    neighbours instead of torch.unique: no data-dependent shape, so no host synchronisation."""
    n = groups.shape[0]
    if n == 0:
        return torch.zeros((), dtype=torch.int64, device=groups.device)
    # invalid forms get distinct ids below every real group: never a partner of anything
    ids = torch.where(valid, groups.long(), groups.long().min() - 1 - torch.arange(n, device=groups.device))
    ordered = torch.sort(ids).values
    same = ordered[1:] == ordered[:-1]
    no = torch.zeros(1, dtype=torch.bool, device=groups.device)
    return (torch.cat([same, no]) | torch.cat([no, same])).sum()

