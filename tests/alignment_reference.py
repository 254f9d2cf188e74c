"""Plain-PyTorch reference of PreAlign's alignment loss (Eq. 1-3), written from the paper's text
and independent of megatron-core and of megatron_prealign.alignment: each word form runs
through the model *on its own* (no packing, no masks), the states are mean-pooled per layer and
the supervised contrastive loss is spelled out with loops.

The model is re-implemented from its definition (GPT-2: learned positions, LayerNorm, GeLU,
tied embeddings; LLaMA: RoPE, RMSNorm, SwiGLU, untied) on the full tensors named as in
megatron-core's sharded state dict, so gradients compare tensor by tensor.
"""

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F


def _norm(x, weights, prefix, family, index=None):
    weight = weights[prefix + "weight"] if index is None else weights[prefix + "weight"][index]
    if family == "llama":
        return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-5)
    bias = weights[prefix + "bias"] if index is None else weights[prefix + "bias"][index]
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=1e-5)


def _rope(x, base=10000):
    """[n, heads, d] rotated by positions 0..n-1 (rotate-half convention)."""
    n, _, d = x.shape
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angles = torch.outer(torch.arange(n, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]
    first, second = x.chunk(2, dim=-1)
    return x * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()


def form_states(weights: Dict[str, torch.Tensor], ids: Sequence[int], family: str,
                num_layers: int, num_heads: int) -> List[torch.Tensor]:
    """Mean-pooled states of one form: input embedding, layers 1..L-1, final-norm output of
    layer L, output embedding (L + 2 vectors)."""
    ids = torch.as_tensor(list(ids))
    n = len(ids)
    llama = family == "llama"
    word_embeddings = weights["embedding.word_embeddings.weight"]
    x = word_embeddings[ids]
    if not llama:
        x = x + weights["embedding.position_embeddings.weight"][:n]
    states = [x]
    hidden = x.shape[-1]
    head_dim = hidden // num_heads

    def linear(name, layer, inp):
        out = inp @ weights[f"decoder.layers.{name}.weight"][layer].T
        bias = weights.get(f"decoder.layers.{name}.bias")
        return out if bias is None else out + bias[layer]

    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for layer in range(num_layers):
        h = _norm(x, weights, "decoder.layers.self_attention.linear_qkv.layer_norm_", family, layer)
        # Fused QKV rows are grouped per head: [q, k, v] of head 0, then of head 1, ...
        q, k, v = linear("self_attention.linear_qkv", layer, h).view(n, num_heads, 3 * head_dim).split(head_dim, -1)
        if llama:
            q, k = _rope(q), _rope(k)
        scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(head_dim)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attended = torch.einsum("hij,jhd->ihd", probs, v).reshape(n, hidden)
        x = x + linear("self_attention.linear_proj", layer, attended)
        h = _norm(x, weights, "decoder.layers.mlp.linear_fc1.layer_norm_", family, layer)
        up = linear("mlp.linear_fc1", layer, h)
        if llama:
            gate, value = up.chunk(2, dim=-1)
            activated = F.silu(gate) * value
        else:
            activated = F.gelu(up)
        x = x + linear("mlp.linear_fc2", layer, activated)
        states.append(x)
    states[-1] = _norm(x, weights, "decoder.final_layernorm.", family)
    output_weight = weights["output_layer.weight"] if llama else word_embeddings
    states.append(output_weight[ids])
    return [state.mean(dim=0) for state in states]


def supcon(vectors: List[torch.Tensor], groups: List[int], tau: float) -> torch.Tensor:
    """Eq. 2 with loops: mean over anchors i (forms with another form of their word) of
    -1/|P(i)| sum_p log(exp(cos(z_i, z_p)/tau) / sum_{a != i} exp(cos(z_i, z_a)/tau))."""
    n = len(vectors)
    terms = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and groups[p] == groups[i]]
        if not positives:
            continue
        sims = {a: F.cosine_similarity(vectors[i], vectors[a], dim=0) / tau for a in range(n) if a != i}
        log_denominator = torch.logsumexp(torch.stack(list(sims.values())), dim=0)
        terms.append(-sum(sims[p] - log_denominator for p in positives) / len(positives))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def alignment_objective(weights, microbatches, family, num_layers, num_heads, tau, loss_weight):
    """weight x mean over microbatches of sum over states (Eq. 3) of the layer loss (Eq. 2).
    ``microbatches``: list of (forms, groups) of each microbatch's global batch."""
    total = 0.0
    for forms, groups in microbatches:
        per_form = [form_states(weights, form, family, num_layers, num_heads) for form in forms]
        num_states = len(per_form[0])
        total = total + sum(
            supcon([states[s] for states in per_form], groups, tau) for s in range(num_states)
        )
    return loss_weight * total / len(microbatches)
