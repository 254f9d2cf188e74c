"""PreAlign's contrastive alignment pass: pooled word-form states at every layer, a supervised
contrastive loss per layer, exact under TP / PP / DP / SP, bf16 and activation recompute.
See docs/alignment.md."""

from megatron_prealign.alignment.microbatch import (  # noqa: F401
    AlignmentBatch,
    block_diagonal_causal_mask,
    pack_forms,
)
from megatron_prealign.alignment.contrastive import DEFAULT_TEMPERATURE  # noqa: F401
from megatron_prealign.alignment.metrics import AlignmentStatistics  # noqa: F401
from megatron_prealign.alignment.step import AlignmentPass, is_alignment_batch  # noqa: F401
