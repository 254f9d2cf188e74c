"""Packed sequences: several variable-length segments in one row of the training length.

The one packing implementation of the project. PreAlign's alignment pass packs word forms
(:mod:`megatron_prealign.alignment.microbatch`, :mod:`megatron_prealign.data.alignment_words`) and
instruction tuning packs records (``--sft-packing``, :mod:`megatron_prealign.instruct.dataset`);
both place segments with :func:`pack_layout`, mark them with ``segment_ids`` (-1 = padding) and
``position_ids`` restarting at 0 in every segment, and hand megatron-core one of:

* on the local attention (``--transformer-impl local``): the explicit block-diagonal causal mask of
  :func:`block_diagonal_causal_mask` (megatron-core's ``DotProductAttention`` rejects
  ``packed_seq_params`` but honours an explicit mask);
* on Transformer Engine layers: megatron-core's ``PackedSeqParams`` in the THD format
  (:func:`packed_seq_params`), whose ``cu_seqlens`` cover every row of the microbatch (not only
  the first one, a known failure elsewhere), with the microbatch flattened to one row
  (:func:`to_thd`).

Every pipeline stage builds the mask / ``cu_seqlens`` from the same batch (the batch travels to
every stage), so no stage attends across segments.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch


def pack_layout(
    lengths: Sequence[int], seq_length: int, num_rows: Optional[int] = None
) -> List[Tuple[int, int]]:
    """(row, start column) of every segment, placed first-fit in order.

    With ``num_rows`` the rows are fixed and a segment that fits nowhere raises ValueError;
    without, a new row opens when a segment fits into no open row. A segment longer than
    ``seq_length`` (or empty) raises ValueError naming its index. The first row with room is
    found in O(log rows) (a max tree over the rows' free space), so packing an epoch of
    hundreds of thousands of records takes seconds.
    """
    if seq_length < 1 or (num_rows is not None and num_rows < 1):
        raise ValueError("seq_length and num_rows must be >= 1")
    capacity = num_rows if num_rows is not None else max(1, len(lengths))
    size = 1 << (capacity - 1).bit_length()
    free = [0] * (2 * size)  # free[node]: most free space of a row under node
    for leaf in range(capacity):
        free[size + leaf] = seq_length
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    placement = []
    for index, length in enumerate(lengths):
        if length < 1:
            raise ValueError(f"segment {index} is empty")
        if length > seq_length:
            raise ValueError(f"segment {index} has {length} tokens, more than the packing length {seq_length}")
        if free[1] < length:
            raise ValueError(
                f"{len(lengths)} segments do not fit into {num_rows} x {seq_length} tokens "
                f"(stopped at segment {index})"
            )
        node = 1
        while node < size:  # leftmost row with room
            node = 2 * node if free[2 * node] >= length else 2 * node + 1
        row = node - size
        placement.append((row, seq_length - free[node]))
        free[node] -= length
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return placement


def fill_rows(
    segments: Sequence[Sequence[int]],
    placement: Sequence[Tuple[int, int]],
    seq_length: int,
    num_rows: Optional[int] = None,
    pad_value: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values, position_ids, segment_ids)``, each ``[rows, seq_length]`` int64: the segments
    written at their placement, positions restarting at 0 per segment, segment index (-1 at
    padding, where values are ``pad_value`` and positions 0)."""
    rows = num_rows if num_rows is not None else 1 + max((r for r, _ in placement), default=-1)
    values = torch.full((rows, seq_length), pad_value, dtype=torch.int64)
    positions = torch.zeros((rows, seq_length), dtype=torch.int64)
    segment_ids = torch.full((rows, seq_length), -1, dtype=torch.int64)
    for index, (segment, (row, start)) in enumerate(zip(segments, placement)):
        end = start + len(segment)
        values[row, start:end] = torch.as_tensor(segment, dtype=torch.int64)
        positions[row, start:end] = torch.arange(end - start)
        segment_ids[row, start:end] = index
    return values, positions, segment_ids


def block_diagonal_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[n_seq, 1, s, s] bool attention mask, True = masked out (megatron-core's local attention
    fills True entries with -10000 before the softmax). A token sees the earlier tokens of its
    own segment; a padding token sees only itself, so no softmax row is empty."""
    same_segment = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    seq_len = segment_ids.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=segment_ids.device).tril()
    visible = same_segment & causal & (segment_ids >= 0).unsqueeze(2)
    visible |= torch.eye(seq_len, dtype=torch.bool, device=segment_ids.device)
    return (~visible).unsqueeze(1)


def _run_lengths(segment_ids: torch.Tensor) -> torch.Tensor:
    """Lengths of the maximal runs of equal segment ids over all rows, row after row (a row
    boundary always ends a run; every padding run is a sequence of its own). Data-dependent
    shape (``nonzero``): meant for host tensors (:func:`thd_boundaries`)."""
    flat = segment_ids.reshape(-1)
    boundary = torch.ones_like(flat, dtype=torch.bool)
    boundary[1:] = flat[1:] != flat[:-1]
    row_starts = torch.arange(0, flat.numel(), segment_ids.shape[1], device=flat.device)
    boundary[row_starts] = True
    starts = boundary.nonzero().flatten()
    ends = torch.cat([starts[1:], torch.tensor([flat.numel()], device=flat.device)])
    return ends - starts


def thd_boundaries(segment_ids: torch.Tensor) -> dict:
    """``{"cu_seqlens": int32 [runs + 1], "max_seqlen": int}`` of a packed microbatch
    ``segment_ids [b, s]`` flattened with :func:`to_thd` (every row covered; each padding run
    its own sequence, so it attends nowhere else). Computed on the host when the batch is
    collated, as Megatron-LM does: on the device, ``nonzero`` and the maximum would read back
    to the host in every step."""
    lengths = _run_lengths(segment_ids.cpu())
    cu_seqlens = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(lengths, 0)
    return {"cu_seqlens": cu_seqlens, "max_seqlen": int(lengths.max())}


# Keys thd_boundaries adds to a batch: not [b, s] tensors, so to_thd leaves them as they are.
THD_KEYS = ("cu_seqlens", "max_seqlen")


def packed_seq_params(cu_seqlens: torch.Tensor, max_seqlen: int):
    """megatron-core ``PackedSeqParams`` (THD) from :func:`thd_boundaries`' values
    (``cu_seqlens`` already on the device, ``max_seqlen`` a host int: nothing is read back)."""
    from megatron.core.packed_seq_params import PackedSeqParams  # megatron-core: only on the THD path

    return PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
        max_seqlen_q=int(max_seqlen), max_seqlen_kv=int(max_seqlen),
    )


def to_thd(batch: dict) -> dict:
    """A packed microbatch ``[b, s]`` as one ``[1, b * s]`` row (the THD layout megatron-core's
    packed path expects); ``cu_seqlens`` keep the rows apart."""
    return {key: value if key in THD_KEYS else value.reshape(1, -1) for key, value in batch.items()}
