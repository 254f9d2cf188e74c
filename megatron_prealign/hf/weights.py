"""Weight mapping between transformers checkpoints and megatron-core's GPTModel.

One `Rule` per megatron-core tensor of the unsharded (TP=1, PP=1) model: the transformers
tensors it is made of and the two conversions. Layer names use global layer numbers; sharding
over TP / PP is left to the model (`tensor_model_parallel` / `partition_dim` attributes) and to
megatron-core's dist_checkpointing.

Layout facts the rules encode:
- megatron-core's fused QKV weight holds, per query group, the group's query heads then its key
  head then its value head ([groups x (heads/groups + 2) x head_dim, hidden]); transformers keeps
  q, k and v apart (LLaMA) or concatenated whole (GPT-2's c_attn);
- the SwiGLU fc1 weight is [gate; up];
- GPT-2's Conv1D stores weights as [in, out]: transposed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch

from megatron_prealign.model import ModelArgs


@dataclasses.dataclass
class Rule:
    megatron: str  # name in the unsharded model's state dict
    hf: Tuple[str, ...]  # transformers tensors it is built from
    to_megatron: Callable[..., torch.Tensor]
    to_hf: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]


def _same(x):
    return x


def _one(x):
    return (x,)


def qkv_to_megatron(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    rest = q.shape[1:]
    parts = [t.reshape(groups, -1, *rest) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(-1, *rest)


def qkv_from_megatron(qkv: torch.Tensor, heads: int, groups: int, head_dim: int):
    rest = qkv.shape[1:]
    per_group_q = heads // groups * head_dim
    grouped = qkv.reshape(groups, per_group_q + 2 * head_dim, *rest)
    q = grouped[:, :per_group_q].reshape(-1, *rest)
    k = grouped[:, per_group_q:per_group_q + head_dim].reshape(-1, *rest)
    v = grouped[:, per_group_q + head_dim:].reshape(-1, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def vocab_rules(args: ModelArgs, megatron: str, hf: str) -> Rule:
    """Embedding / output rows: zero padding rows in, padding rows out only when they are not
    tokens (true_vocab_size; a trained model's padded rows are part of its softmax)."""
    rows = args.true_vocab_size or args.vocab_size

    def to_megatron(weight):
        pad = args.vocab_size - weight.shape[0]
        return torch.cat([weight, weight.new_zeros(pad, *weight.shape[1:])]) if pad else weight

    return Rule(megatron, (hf,), to_megatron, lambda w: (w[:rows].contiguous(),))


def llama_rules(args: ModelArgs) -> List[Rule]:
    heads, groups = args.num_attention_heads, args.num_query_groups or args.num_attention_heads
    head_dim = args.kv_channels or args.hidden_size // heads
    rules = [vocab_rules(args, "embedding.word_embeddings.weight", "model.embed_tokens.weight")]
    for i in range(args.num_layers):
        m, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        rules += [
            Rule(m + "input_layernorm.weight", (h + "input_layernorm.weight",), _same, _one),
            Rule(m + "self_attention.linear_qkv.weight",
                 tuple(h + f"self_attn.{x}_proj.weight" for x in "qkv"),
                 lambda q, k, v: qkv_to_megatron(q, k, v, groups),
                 lambda w: qkv_from_megatron(w, heads, groups, head_dim)),
            Rule(m + "self_attention.linear_proj.weight", (h + "self_attn.o_proj.weight",), _same, _one),
            Rule(m + "pre_mlp_layernorm.weight", (h + "post_attention_layernorm.weight",), _same, _one),
            Rule(m + "mlp.linear_fc1.weight", (h + "mlp.gate_proj.weight", h + "mlp.up_proj.weight"),
                 lambda gate, up: torch.cat([gate, up]),
                 lambda w: tuple(x.contiguous() for x in w.chunk(2))),
            Rule(m + "mlp.linear_fc2.weight", (h + "mlp.down_proj.weight",), _same, _one),
        ]
    rules.append(Rule("decoder.final_layernorm.weight", ("model.norm.weight",), _same, _one))
    if not args.tied_embeddings():
        rules.append(vocab_rules(args, "output_layer.weight", "lm_head.weight"))
    return rules


def _transposed(x):
    return x.t().contiguous()


def gpt2_rules(args: ModelArgs, prefix: str = "transformer.") -> List[Rule]:
    heads = args.num_attention_heads
    head_dim = args.hidden_size // heads

    def c_attn_in(w):  # Conv1D [h, 3h] or bias [3h] -> megatron's per-head [q, k, v]
        w = w.t() if w.dim() == 2 else w
        return qkv_to_megatron(*w.chunk(3), heads)

    def c_attn_out(w):
        q, k, v = qkv_from_megatron(w, heads, heads, head_dim)
        fused = torch.cat([q, k, v])
        return (_transposed(fused) if fused.dim() == 2 else fused,)

    p = prefix
    rules = [vocab_rules(args, "embedding.word_embeddings.weight", p + "wte.weight"),
             Rule("embedding.position_embeddings.weight", (p + "wpe.weight",), _same, _one)]
    for i in range(args.num_layers):
        m, h = f"decoder.layers.{i}.", f"{p}h.{i}."
        for kind in ("weight", "bias"):
            conv = _transposed if kind == "weight" else _same
            rules += [
                Rule(m + f"input_layernorm.{kind}", (h + f"ln_1.{kind}",), _same, _one),
                Rule(m + f"self_attention.linear_qkv.{kind}", (h + f"attn.c_attn.{kind}",),
                     c_attn_in, c_attn_out),
                Rule(m + f"self_attention.linear_proj.{kind}", (h + f"attn.c_proj.{kind}",),
                     conv, lambda w, conv=conv: (conv(w),)),
                Rule(m + f"pre_mlp_layernorm.{kind}", (h + f"ln_2.{kind}",), _same, _one),
                Rule(m + f"mlp.linear_fc1.{kind}", (h + f"mlp.c_fc.{kind}",), conv,
                     lambda w, conv=conv: (conv(w),)),
                Rule(m + f"mlp.linear_fc2.{kind}", (h + f"mlp.c_proj.{kind}",), conv,
                     lambda w, conv=conv: (conv(w),)),
            ]
    rules += [Rule(f"decoder.final_layernorm.{kind}", (p + f"ln_f.{kind}",), _same, _one)
              for kind in ("weight", "bias")]
    if not args.tied_embeddings():
        rules.append(vocab_rules(args, "output_layer.weight", "lm_head.weight"))
    return rules


def rules_for(args: ModelArgs, hf_prefix: str = "transformer.") -> List[Rule]:
    return llama_rules(args) if args.family == "llama" else gpt2_rules(args, hf_prefix)


def expected_hf_shapes(args: ModelArgs, rules: Sequence[Rule]) -> Dict[str, Tuple[int, ...]]:
    """The transformers tensor shapes `args` implies (computed by converting zero tensors of the
    megatron shapes, so the rules are the one source of truth)."""
    shapes = {}
    for rule in rules:
        for name, tensor in zip(rule.hf, rule.to_hf(torch.empty(megatron_shape(args, rule.megatron),
                                                                device="meta"))):
            shapes[name] = tuple(tensor.shape)
    return shapes


def megatron_shape(args: ModelArgs, name: str) -> Tuple[int, ...]:
    """Unsharded shape of a megatron-core GPTModel tensor of the local spec."""
    h, ffn = args.hidden_size, args.resolved_ffn_hidden_size()
    heads, groups = args.num_attention_heads, args.num_query_groups or args.num_attention_heads
    head_dim = args.kv_channels or h // heads
    gated = 2 if args.resolved_activation() == "swiglu" else 1
    kind = name.rsplit(".", 1)[-1]
    table = {
        "word_embeddings": (args.vocab_size, h), "output_layer": (args.vocab_size, h),
        "position_embeddings": (args.max_position_embeddings or args.seq_length, h),
        "linear_qkv": ((heads + 2 * groups) * head_dim, h), "linear_proj": (h, heads * head_dim),
        "linear_fc1": (gated * ffn, h), "linear_fc2": (h, ffn),
    }
    module = name.split(".")[-2]
    if module in table:
        shape = table[module]
        return shape if kind == "weight" else shape[:1]
    return (h,)  # norms


def export_tensors(state: Dict[str, torch.Tensor], rules: Sequence[Rule]) -> Iterator[Tuple[str, torch.Tensor]]:
    """(transformers name, tensor) per tensor, in rule order, from an unsharded megatron-core
    state dict."""
    for rule in rules:
        for name, tensor in zip(rule.hf, rule.to_hf(state[rule.megatron])):
            yield name, tensor
