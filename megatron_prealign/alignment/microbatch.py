"""The alignment microbatch: word forms packed into sequences of the training length.

A *form* is one word's token ids (an English word or one of its translations); forms of the
same word share a *group*. Forms are packed end to end into ``[n_seq, seq_len]`` rows so that
alignment microbatches have the shape of LM microbatches and ride the same pipeline schedule.
Attention is causal inside a form and blocked across forms (:func:`block_diagonal_causal_mask`
of :mod:`megatron_prealign.data.packing`, the packing shared with instruction tuning),
and learned positions restart at 0 for every form, so each form is encoded exactly as if it were
run through the model on its own (RoPE needs no restart: it depends only on relative positions,
which a block-diagonal mask keeps inside one form).

The field names match ``megatron_prealign.data.alignment_words.WordFormBatch``, so the data
pipeline's batches are accepted as they are (:meth:`AlignmentBatch.of`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import List, Sequence

import torch

from megatron_prealign.data.packing import (  # noqa: F401  (block_diagonal_causal_mask: re-exported)
    block_diagonal_causal_mask,
    fill_rows,
    pack_layout,
)


@dataclasses.dataclass
class AlignmentBatch:
    """One alignment microbatch (all int64 tensors).

    tokens       [n_seq, seq_len]  token ids; any id at padding.
    position_ids [n_seq, seq_len]  0, 1, ... restarting at every form (0 at padding).
    segment_ids  [n_seq, seq_len]  index of the form a token belongs to (0..n_forms-1), -1 at
                                   padding. A form is one contiguous run inside one row.
    form_group   [n_forms]         group of each form. Groups are global to the step: forms with
                                   equal ``form_group`` on any data-parallel rank are positives
                                   of each other; all other forms are negatives.
    """

    tokens: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    form_group: torch.Tensor

    def __post_init__(self):
        validate(self)

    @classmethod
    def of(cls, batch) -> "AlignmentBatch":
        """Accept any object with the four fields (e.g. the data pipeline's WordFormBatch)."""
        if isinstance(batch, cls):
            return batch
        return cls(batch.tokens, batch.position_ids, batch.segment_ids, batch.form_group)

    @property
    def num_forms(self) -> int:
        return int(self.form_group.numel())

    @property
    def num_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_length(self) -> int:
        return int(self.tokens.shape[1])

    def form_lengths(self) -> torch.Tensor:
        # A comparison with every form id rather than bincount: no data-dependent shape, so no
        # host synchronisation on CUDA (forms x tokens booleans: small).
        forms = torch.arange(self.num_forms, device=self.segment_ids.device)
        return (self.segment_ids.reshape(1, -1) == forms[:, None]).sum(dim=1)

    def to(self, device) -> "AlignmentBatch":
        """The batch on ``device``, not validated again (validated on the host when made:
        validating on a GPU would synchronise with the host)."""
        moved = copy.copy(self)
        for field in dataclasses.fields(self):
            setattr(moved, field.name, getattr(self, field.name).to(device, non_blocking=True))
        return moved


def validate(batch: AlignmentBatch):
    """Raise ValueError on anything the alignment pass would silently get wrong."""
    tokens, positions, segments, groups = (
        batch.tokens, batch.position_ids, batch.segment_ids, batch.form_group
    )
    for name, tensor, dim in (
        ("tokens", tokens, 2), ("position_ids", positions, 2), ("segment_ids", segments, 2),
        ("form_group", groups, 1),
    ):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != dim:
            raise ValueError(f"alignment batch: {name} must be a {dim}-d tensor")
        if tensor.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"alignment batch: {name} must hold integers, not {tensor.dtype}")
    if positions.shape != tokens.shape or segments.shape != tokens.shape:
        raise ValueError("alignment batch: tokens, position_ids and segment_ids differ in shape")
    num_forms = groups.numel()
    if segments.numel() and (segments.min() < -1 or segments.max() >= num_forms):
        raise ValueError(f"alignment batch: segment_ids must lie in [-1, {num_forms - 1}]")
    valid = segments >= 0
    lengths = torch.bincount(segments[valid].long(), minlength=num_forms)
    empty = (lengths == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"alignment batch: form(s) {empty.tolist()[:10]} have no tokens")
    # Contiguity and restarting positions: inside a form, positions count 0, 1, 2, ...; the
    # number of (row, form) runs equals the number of forms.
    starts = valid.clone()
    starts[:, 1:] &= segments[:, 1:] != segments[:, :-1]
    if int(starts.sum()) != num_forms:
        raise ValueError("alignment batch: every form must be one contiguous run in one row")
    expected = torch.zeros_like(positions)
    run_start = torch.zeros_like(positions)
    index = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    run_start[starts] = index[starts]
    run_start = torch.cummax(run_start, dim=1).values
    expected[valid] = (index - run_start)[valid]
    if not torch.equal(positions[valid].long(), expected[valid].long()):
        raise ValueError("alignment batch: position_ids must restart at 0 for every form")


def pack_forms(
    forms: Sequence[Sequence[int]],
    form_group: Sequence[int],
    seq_length: int,
    num_sequences: int,
    pad_token_id: int = 0,
) -> AlignmentBatch:
    """Pack forms first-fit, in order, into exactly ``num_sequences`` rows of ``seq_length``
    (the project's one packing, :mod:`megatron_prealign.data.packing`).

    Raises ValueError for an empty form, a form longer than ``seq_length`` and forms that do not
    fit (then put fewer words into the microbatch)."""
    if len(forms) != len(form_group):
        raise ValueError(f"{len(forms)} forms but {len(form_group)} group ids")
    for index, form in enumerate(forms):
        if len(form) == 0:
            raise ValueError(f"form {index} (group {form_group[index]}) is empty")
        if len(form) > seq_length:
            raise ValueError(
                f"form {index} (group {form_group[index]}) has {len(form)} tokens, more than the "
                f"packing length {seq_length} (--seq-length); drop or truncate such words"
            )
    try:
        placement = pack_layout([len(f) for f in forms], seq_length, num_sequences)
    except ValueError as error:
        if "do not fit" not in str(error):
            raise
        raise ValueError(f"{error}; use fewer words per alignment microbatch") from None
    tokens, positions, segments = fill_rows(forms, placement, seq_length, num_sequences, pad_token_id)
    return AlignmentBatch(tokens, positions, segments, torch.as_tensor(list(form_group), dtype=torch.int64))


def _bucket(value: int) -> int:
    """`value` rounded up to one of 8 sizes per power of two (at most 1/8 padding)."""
    step = 1 << max(0, value.bit_length() - 4)
    return -(-value // step) * step


def one_form_per_row(forms: Sequence[Sequence[int]], form_group: Sequence[int], row_multiple: int = 1,
                     rows_multiple: int = 1, pad_token_id: int = 0, bucketed: bool = False) -> AlignmentBatch:
    """Every form at the start of its own row (attention_path.ONE_FORM_PER_ROW): rows as long
    as the longest form rounded up to ``row_multiple`` (sequence parallelism splits rows over
    TP ranks), row count rounded up to ``rows_multiple`` with padding rows (fp8 GEMMs want token
    counts divisible by 16). ``bucketed``: row length and count rounded up to 8 sizes per power
    of two first, so that a run sees a few shapes (fused attention builds a cuDNN graph per
    shape) for at most 1/8 padding each."""
    if not forms:
        raise ValueError("no forms to put into rows")
    if len(forms) != len(form_group):
        raise ValueError(f"{len(forms)} forms but {len(form_group)} group ids")
    length, rows = max(len(form) for form in forms), len(forms)
    if bucketed:
        length, rows = _bucket(length), _bucket(rows)
    length = -(-length // row_multiple) * row_multiple
    rows = -(-rows // rows_multiple) * rows_multiple
    tokens = torch.full((rows, length), pad_token_id, dtype=torch.int64)
    positions = torch.zeros((rows, length), dtype=torch.int64)
    segments = torch.full((rows, length), -1, dtype=torch.int64)
    for index, form in enumerate(forms):
        if not len(form):
            raise ValueError(f"form {index} (group {form_group[index]}) is empty")
        tokens[index, : len(form)] = torch.as_tensor(list(form), dtype=torch.int64)
        positions[index, : len(form)] = torch.arange(len(form))
        segments[index, : len(form)] = index
    return AlignmentBatch(tokens, positions, segments, torch.as_tensor(list(form_group), dtype=torch.int64))


def forms_of(batch: AlignmentBatch) -> List[List[int]]:
    """The token ids of every form, in form order (for references and debugging)."""
    forms: List[List[int]] = [[] for _ in range(batch.num_forms)]
    for row_tokens, row_segments in zip(batch.tokens.tolist(), batch.segment_ids.tolist()):
        for token, segment in zip(row_tokens, row_segments):
            if segment >= 0:
                forms[segment].append(token)
    return forms
