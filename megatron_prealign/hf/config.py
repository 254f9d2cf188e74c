"""Hugging Face configs <-> this project's model architecture (`ModelArgs`).

Supported families (anything else is refused with a message before any weight is read):

- LLaMA / Mistral (`LlamaForCausalLM`, `MistralForCausalLM`): RoPE (theta; default, linear and
  LLaMA-3 scaling), RMSNorm eps, SwiGLU, grouped-query attention, optional head_dim, tied or
  untied embeddings, Mistral's sliding window;
- GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm, GeLU (exact or tanh), biases, tied
  embeddings.
"""

from __future__ import annotations

import json
from typing import Optional

from megatron_prealign.model import ModelArgs
from megatron_prealign.training.vocab import pad_vocab_size
from megatron_prealign.errors import ConversionError


LLAMA_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}
GPT2_ARCHITECTURES = {"GPT2LMHeadModel": "gpt2"}
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
# megatron-core's LLaMA-3 RoPE scaling hard-codes these (RotaryEmbedding._apply_scaling).
LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _architecture_name(config) -> str:
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        if name in LLAMA_ARCHITECTURES or name in GPT2_ARCHITECTURES:
            return name
    by_type = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "gpt2": "GPT2LMHeadModel"}
    if getattr(config, "model_type", None) in by_type and not names:
        return by_type[config.model_type]
    supported = ", ".join([*LLAMA_ARCHITECTURES, *GPT2_ARCHITECTURES])
    raise ConversionError(
        f"unsupported architecture {names or config.model_type!r} (model_type "
        f"{getattr(config, 'model_type', None)!r}); supported: {supported}")


def _require_positive(config, names):
    """Sizes that must be whole numbers >= 1 (0 layers or -1 positions import into a checkpoint
    nothing can load or run)."""
    bad = [f"{name}: {getattr(config, name, None)!r}" for name in names
           if type(getattr(config, name, None)) is not int or getattr(config, name) < 1]
    if bad:
        raise ConversionError(f"config.json: {', '.join(bad)}; these sizes must be whole numbers >= 1")


def _refuse(condition: bool, what: str):
    if condition:
        raise ConversionError(f"unsupported configuration: {what}")


def _rope(config) -> dict:
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope and all(isinstance(v, dict) for v in rope.values()):
        raise ConversionError("unsupported configuration: per-layer-type RoPE parameters")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    _refuse(rope.get("partial_rotary_factor", 1.0) != 1.0, "partial_rotary_factor != 1")
    result = {"rotary_base": float(theta)}
    if rope_type == "default":
        return result
    if rope_type == "linear":
        return {**result, "rotary_seq_len_interpolation_factor": float(rope["factor"])}
    if rope_type == "llama3":
        different = {k: rope.get(k) for k, v in LLAMA3_FIXED.items() if float(rope.get(k, -1)) != v}
        _refuse(bool(different), f"llama3 RoPE scaling with {different} (megatron-core supports "
                f"only {LLAMA3_FIXED})")
        return {**result, "rope_scaling_factor": float(rope["factor"])}
    raise ConversionError(f"unsupported configuration: RoPE type {rope_type!r} (supported: "
                          "default, linear, llama3)")


def model_args_from_hf(config, tensor_parallel: int = 1, pipeline_parallel: int = 1,
                       divisible_by: int = 128) -> ModelArgs:
    """The ModelArgs of a transformers config (`PreTrainedConfig`), padded for `tensor_parallel`.
    Raises ConversionError for anything this project's model cannot reproduce exactly."""
    name = _architecture_name(config)
    _require_positive(config, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "max_position_embeddings")
                      if name in LLAMA_ARCHITECTURES else
                      ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"))
    layout = dict(tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=pipeline_parallel)
    common = dict(hidden_dropout=0.0, attention_dropout=0.0, true_vocab_size=config.vocab_size,
                  vocab_size=pad_vocab_size(config.vocab_size, tensor_parallel, divisible_by))
    if name in LLAMA_ARCHITECTURES:
        _refuse(config.hidden_act != "silu", f"hidden_act {config.hidden_act!r} (LLaMA needs silu)")
        _refuse(bool(getattr(config, "attention_bias", False)), "attention_bias=True")
        _refuse(bool(getattr(config, "mlp_bias", False)), "mlp_bias=True")
        _refuse(getattr(config, "layer_types", None) is not None
                and len(set(config.layer_types)) > 1, "mixed layer_types")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        window = getattr(config, "sliding_window", None) if name == "MistralForCausalLM" else None
        if window is not None and window >= config.max_position_embeddings:
            window = None  # never narrower than the context: plain causal attention
        return ModelArgs(
            family="llama", seq_length=config.max_position_embeddings,
            max_position_embeddings=config.max_position_embeddings,
            num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            num_query_groups=config.num_key_value_heads or config.num_attention_heads,
            ffn_hidden_size=config.intermediate_size, norm_epsilon=float(config.rms_norm_eps),
            untie_embeddings_and_output_weights=not config.tie_word_embeddings,
            activation="swiglu",
            kv_channels=head_dim if head_dim * config.num_attention_heads != config.hidden_size else None,
            sliding_window=window, **_rope(config), **common, **layout)
    activation = GPT2_ACTIVATIONS.get(config.activation_function)
    _refuse(activation is None, f"activation_function {config.activation_function!r} "
            f"(supported: {', '.join(GPT2_ACTIVATIONS)})")
    _refuse(not config.scale_attn_weights, "scale_attn_weights=False")
    _refuse(bool(config.scale_attn_by_inverse_layer_idx), "scale_attn_by_inverse_layer_idx=True")
    _refuse(bool(getattr(config, "add_cross_attention", False)), "add_cross_attention=True")
    return ModelArgs(
        family="gpt2", seq_length=config.n_positions, max_position_embeddings=config.n_positions,
        num_layers=config.n_layer, hidden_size=config.n_embd, num_attention_heads=config.n_head,
        ffn_hidden_size=config.n_inner or 4 * config.n_embd,
        norm_epsilon=float(config.layer_norm_epsilon), activation=activation,
        untie_embeddings_and_output_weights=not config.tie_word_embeddings, **common, **layout)


def hf_architecture(config) -> str:
    return _architecture_name(config)


def config_to_json(config) -> dict:
    """Plain JSON types (what a checkpoint's run state may hold)."""
    return json.loads(config.to_json_string(use_diff=False))


SPECIAL_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def token_ids_in_vocab(value, vocab_size: int):
    """A token id (or list of ids, as LLaMA-3's EOS) without the ids beyond the vocabulary; None
    when none is left."""
    if isinstance(value, (list, tuple)):
        return [v for v in value if 0 <= v < vocab_size] or None
    return value if value is not None and 0 <= value < vocab_size else None


def hf_config_from_args(args: ModelArgs, vocab_size: int, saved: Optional[dict] = None,
                        max_position_embeddings: Optional[int] = None, dtype: str = "float32"):
    """A transformers config for `args`. `saved`: the config an imported checkpoint came from
    (keeps its token ids and model type); otherwise LLaMA / GPT-2 defaults."""
    import transformers

    saved = dict(saved or {})
    positions = args.max_position_embeddings or max_position_embeddings or args.seq_length
    if args.family == "llama":
        model_type = saved.get("model_type") if saved.get("model_type") in ("llama", "mistral") else "llama"
        rope = {"rope_type": "default", "rope_theta": float(args.rotary_base)}
        if args.rope_scaling_factor is not None:
            rope = {**rope, "rope_type": "llama3", "factor": args.rope_scaling_factor, **LLAMA3_FIXED}
        elif args.rotary_seq_len_interpolation_factor is not None:
            rope = {**rope, "rope_type": "linear", "factor": args.rotary_seq_len_interpolation_factor}
        fields = dict(
            vocab_size=vocab_size, hidden_size=args.hidden_size,
            intermediate_size=args.resolved_ffn_hidden_size(), num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_attention_heads,
            num_key_value_heads=args.num_query_groups or args.num_attention_heads,
            head_dim=args.kv_channels or args.hidden_size // args.num_attention_heads,
            max_position_embeddings=positions, rms_norm_eps=args.norm_epsilon,
            tie_word_embeddings=args.tied_embeddings(), rope_parameters=rope, hidden_act="silu",
            attention_bias=False, mlp_bias=False)
        if model_type == "mistral":
            fields["sliding_window"] = args.sliding_window
        architecture = "MistralForCausalLM" if model_type == "mistral" else "LlamaForCausalLM"
    else:
        model_type = "gpt2"
        fields = dict(
            vocab_size=vocab_size, n_positions=positions, n_embd=args.hidden_size,
            n_layer=args.num_layers, n_head=args.num_attention_heads,
            n_inner=None if args.resolved_ffn_hidden_size() == 4 * args.hidden_size else args.resolved_ffn_hidden_size(),
            layer_norm_epsilon=args.norm_epsilon,
            activation_function="gelu_new" if args.resolved_activation() == "gelu_tanh" else "gelu",
            tie_word_embeddings=args.tied_embeddings())
        architecture = "GPT2LMHeadModel"
    # Token ids of the saved config (else the family's defaults) that fit the vocabulary: GPT-2's
    # 50256 in a 640-token model would keep generate() from ever stopping.
    defaults = transformers.CONFIG_MAPPING[model_type]()
    for key in SPECIAL_TOKEN_IDS:
        fields[key] = token_ids_in_vocab(saved.get(key, getattr(defaults, key, None)), vocab_size)
    keep = {k: v for k, v in saved.items()
            if k not in fields and k not in ("architectures", "model_type", "transformers_version",
                                             "dtype", "torch_dtype", "rope_theta", "rope_scaling")}
    config = transformers.AutoConfig.for_model(model_type, **{**keep, **fields})
    config.architectures = [architecture]
    config.dtype = dtype
    return config
