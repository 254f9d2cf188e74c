"""Mean-pooling token states per form, and its transpose (spreading a per-form gradient back
onto the tokens).

States arrive in megatron's ``[s, b, h]`` layout together with a ``[s, b]`` map of form indices
(-1 = padding). Sums are taken in fp32 whatever the activation dtype: under bf16 the pooled
vectors feed an exponentiated similarity, where bf16 rounding would be amplified.

The sums are a product with a one-hot [forms, tokens] matrix: a GEMM adds in a fixed order, so
pooling is bit-reproducible on CUDA (``index_add_`` adds with float atomics, in whatever order
they land), and it needs no data-dependent shape (no host synchronisation).
"""

import contextlib

import torch


@contextlib.contextmanager
def _full_fp32_matmul():
    """fp32 GEMMs without TF32 (which would round the states to 10 mantissa bits)."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def sum_by_form(states: torch.Tensor, form_index: torch.Tensor, num_forms: int) -> torch.Tensor:
    """[num_forms, h] fp32 sums of the states of each form's tokens (padding excluded)."""
    flat_states = states.reshape(-1, states.shape[-1]).float()
    flat_index = form_index.reshape(-1)
    forms = torch.arange(num_forms, device=flat_index.device, dtype=flat_index.dtype)
    one_hot = (forms[:, None] == flat_index[None, :]).float()  # padding (-1) matches no form
    with _full_fp32_matmul():
        return one_hot @ flat_states


def spread_to_tokens(per_form: torch.Tensor, form_index: torch.Tensor, dtype) -> torch.Tensor:
    """[*form_index.shape, h]: row ``form_index[t]`` of ``per_form`` at every token, 0 at padding
    (the gradient of ``sum_by_form`` applied to ``per_form``)."""
    padded = torch.cat([per_form, per_form.new_zeros(1, per_form.shape[-1])])
    # -1 (padding) selects the appended zero row.
    index = torch.where(form_index >= 0, form_index, per_form.shape[0])
    return padded[index].to(dtype)
