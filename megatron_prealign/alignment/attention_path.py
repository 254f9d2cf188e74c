"""How an alignment microbatch keeps its word forms apart, given the model's attention.

Each form must be encoded as if run alone. Two layouts do that:

* ``BLOCK_MASK``: forms packed end to end into rows of the training length, with an explicit
  block-diagonal causal mask (batch.py). Needs an attention that applies the mask it is given:
  megatron-core's local ``DotProductAttention`` with its unfused softmax. The fused masked
  softmax (``masked_softmax_fusion``) replaces the mask of a causal layer by its own triangle
  whenever its kernel takes the shape, and Transformer Engine's causal attention (flash / cuDNN)
  ignores the mask altogether.
* ``ONE_FORM_PER_ROW``: every form at the start of its own row, rows as long as the longest
  form. Plain causal attention then is the block-diagonal mask, so any attention works (TE,
  flash, fused softmax, fp8). Forms are short, so this costs fewer tokens than packing into
  training-length rows. Its microbatches have another shape than the LM microbatches
  ([seq-length, micro-batch-size]); under pipeline parallelism the pass therefore sets
  megatron-core's ``config.variable_seq_lengths`` for the steps that carry an alignment
  microbatch (:meth:`AlignmentPass.begin_step` / ``end_step``): every p2p exchange then sends the
  tensor's shape first (p2p_communication._communicate_shapes: one extra small send/receive,
  a device synchronisation and a host read per exchange, on those steps only).

(Transformer Engine's packed sequences, ``PackedSeqParams`` with ``cu_seqlens`` in THD format,
would also keep forms apart; one form per row needs no THD support.)

:func:`choose` picks the layout from the model; :func:`check_mask_honoured` runs one layer's
core attention on the real mask of a microbatch and fails if a form's first token sees anything
but itself (the attention ignored the mask), so a wrong choice cannot pass silently.
"""

from __future__ import annotations

import torch

from megatron.core.transformer.dot_product_attention import DotProductAttention

BLOCK_MASK = "block_diagonal_mask"
ONE_FORM_PER_ROW = "one_form_per_row"


def honours_explicit_mask(gpt_model) -> bool:
    """Whether every layer's attention applies an arbitrary mask (see the module docstring)."""
    config = gpt_model.config
    fused_softmax = config.masked_softmax_fusion and (config.bf16 or config.fp16)
    return not fused_softmax and all(
        isinstance(layer.self_attention.core_attention, DotProductAttention)
        for layer in gpt_model.decoder.layers
    )


def choose(gpt_models, pipeline_parallel_size: int) -> str:
    """BLOCK_MASK where the attention applies it (the CPU and `--transformer-impl local`),
    otherwise ONE_FORM_PER_ROW (at any pipeline parallel size: the pass exchanges its shapes,
    see the module docstring)."""
    if all(honours_explicit_mask(m) for m in gpt_models):
        return BLOCK_MASK
    return ONE_FORM_PER_ROW


def check_mask_honoured(gpt_model, attention_mask: torch.Tensor, segment_ids: torch.Tensor):
    """Run the first layer's core attention (eval mode, random q/k/v from a private generator,
    so no RNG stream moves) with ``attention_mask`` for the layout of ``segment_ids`` [b, s];
    raise RuntimeError if a form's first token attends to any other token."""
    layer = gpt_model.decoder.layers[0]
    attention = layer.self_attention
    core = attention.core_attention
    config = gpt_model.config
    rows, seq = segment_ids.shape
    heads = attention.num_attention_heads_per_partition
    groups = attention.num_query_groups_per_partition
    head_dim = attention.hidden_size_per_attention_head
    device = next(gpt_model.parameters()).device
    dtype = config.params_dtype
    generator = torch.Generator().manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    query, key, value = random(seq, rows, heads, head_dim), random(seq, rows, groups, head_dim), \
        random(seq, rows, groups, head_dim)
    was_training = core.training
    core.eval()
    try:
        with torch.no_grad():
            output = core(query, key, value, attention_mask, attn_mask_type=attention.attn_mask_type)
    finally:
        core.train(was_training)
    output = output.view(seq, rows, heads, head_dim).float()
    starts = segment_ids >= 0
    starts[:, 1:] &= segment_ids[:, 1:] != segment_ids[:, :-1]
    row_index, position = starts.nonzero(as_tuple=True)
    # A token that sees only itself outputs its own value (each query head reads its group's).
    expected = value.float().repeat_interleave(heads // groups, dim=2)[position, row_index]
    got = output[position, row_index]
    tolerance = 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4
    if not torch.allclose(got, expected, atol=tolerance, rtol=tolerance):
        raise RuntimeError(
            f"{type(core).__name__} does not honour the alignment microbatch's attention mask "
            "(a word form's first token attends to earlier tokens): its forms would leak into "
            "each other. This is a bug in the choice of the alignment attention path; use "
            "--transformer-impl local meanwhile")
