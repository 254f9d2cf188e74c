"""Mean-pooling token states per form, and its transpose (spreading a per-form gradient back
onto the tokens).

States arrive in megatron's ``[s, b, h]`` layout together with a ``[s, b]`` map of form indices
(-1 = padding). Sums are taken in fp32 whatever the activation dtype: under bf16 the pooled
vectors feed an exponentiated similarity, where bf16 rounding would be amplified.
"""

import torch


def sum_by_form(states: torch.Tensor, form_index: torch.Tensor, num_forms: int) -> torch.Tensor:
    """[num_forms, h] fp32 sums of the states of each form's tokens (padding excluded)."""
    hidden = states.shape[-1]
    flat_states = states.reshape(-1, hidden)
    flat_index = form_index.reshape(-1)
    valid = flat_index >= 0
    sums = torch.zeros(num_forms, hidden, dtype=torch.float32, device=states.device)
    return sums.index_add_(0, flat_index[valid], flat_states[valid].float())


def spread_to_tokens(per_form: torch.Tensor, form_index: torch.Tensor, dtype) -> torch.Tensor:
    """[*form_index.shape, h]: row ``form_index[t]`` of ``per_form`` at every token, 0 at padding
    (the gradient of ``sum_by_form`` applied to ``per_form``)."""
    padded = torch.cat([per_form, per_form.new_zeros(1, per_form.shape[-1])])
    # -1 (padding) selects the appended zero row.
    index = torch.where(form_index >= 0, form_index, per_form.shape[0])
    return padded[index].to(dtype)
