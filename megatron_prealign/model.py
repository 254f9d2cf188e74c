"""Build megatron-core's GPTModel for the two model families PreAlign uses.

- ``gpt2``: learned absolute positions, LayerNorm, GeLU, biases, tied input/output embeddings
  (the paper's models);
- ``llama``: RoPE, RMSNorm, SwiGLU, no biases, untied embeddings.

``--transformer-impl local`` composes megatron-core's pure-PyTorch layer spec (runs anywhere);
``transformer_engine`` uses the Transformer Engine spec (GPU; needed for fp8).
"""

import dataclasses
from typing import List, Optional

import torch
import torch.nn.functional as F

from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.transformer_block import (
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_prealign import runtime
from megatron_prealign.model_sizes import FAMILIES, MODEL_SIZES
from megatron_prealign.norms import local_norm

ACTIVATIONS = ("gelu", "gelu_tanh", "swiglu")
ARCHITECTURE_FIELDS = (
    "family", "num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
    "ffn_hidden_size", "vocab_size", "max_position_embeddings", "rotary_base", "norm_epsilon",
    "untie_embeddings_and_output_weights", "activation", "kv_channels", "rope_scaling_factor",
    "rotary_seq_len_interpolation_factor", "sliding_window", "true_vocab_size",
    "transformer_impl",  # the parameter layout: TE fuses the norms into the linear layers
)

# Details a run loading a checkpoint takes from it (no training flags for them; written by
# tools/convert_checkpoint.py import-hf); the shape-defining fields must match the flags.
CHECKPOINT_DETAIL_FIELDS = (
    "rotary_base", "norm_epsilon", "untie_embeddings_and_output_weights", "activation",
    "kv_channels", "rope_scaling_factor", "rotary_seq_len_interpolation_factor", "sliding_window",
    "true_vocab_size",
)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GeLU (tanh approximation; transformers' "gelu_new")."""
    return F.gelu(x, approximate="tanh")


@dataclasses.dataclass
class ModelArgs:
    """Model flags, named after Megatron-LM's (`--num-layers` -> num_layers)."""

    vocab_size: int
    seq_length: int
    family: str = "gpt2"
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_query_groups: Optional[int] = None
    ffn_hidden_size: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_method_std: float = 0.02
    rotary_base: float = 10000
    # Architecture details a converted checkpoint (tools/convert_checkpoint.py) may change; the
    # defaults are the families' own. None: the family's default.
    norm_epsilon: float = 1e-5
    untie_embeddings_and_output_weights: Optional[bool] = None
    activation: Optional[str] = None  # "gelu", "gelu_tanh" (GPT-2's gelu_new) or "swiglu"
    kv_channels: Optional[int] = None  # head dimension, when not hidden / heads
    rope_scaling_factor: Optional[float] = None  # LLaMA 3.x RoPE scaling
    rotary_seq_len_interpolation_factor: Optional[float] = None  # linear RoPE scaling
    sliding_window: Optional[int] = None  # Mistral: keys within the last `sliding_window` tokens
    # Vocabulary rows beyond this are padding: their logits are masked so they never change a
    # prediction. None: every row is a token (training runs pad and learn them).
    true_vocab_size: Optional[int] = None
    transformer_impl: str = "local"
    bf16: bool = False
    fp16: bool = False
    fp8_format: Optional[str] = None
    sequence_parallel: bool = False
    recompute_granularity: Optional[str] = None
    recompute_method: Optional[str] = None
    recompute_num_layers: Optional[int] = None
    use_cpu_initialization: bool = False
    # Set from parallel_state when not given, so a config can be validated before init.
    tensor_model_parallel_size: Optional[int] = None
    pipeline_model_parallel_size: Optional[int] = None

    @classmethod
    def named(cls, size: str, **overrides) -> "ModelArgs":
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}")
        return cls(**{**MODEL_SIZES[size], **overrides})

    def architecture(self) -> dict:
        """What a checkpoint must record to be rebuilt (the run state's "architecture")."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS} | {
            "num_query_groups": self.num_query_groups or self.num_attention_heads,
            "ffn_hidden_size": self.resolved_ffn_hidden_size(),
        }

    @classmethod
    def from_architecture(cls, architecture: dict, **overrides) -> "ModelArgs":
        """The inverse of `architecture()`; keys missing in older checkpoints keep the defaults."""
        known = {k: v for k, v in architecture.items() if k in ARCHITECTURE_FIELDS}
        return cls(**{**known, **overrides})

    def tied_embeddings(self) -> bool:
        if self.untie_embeddings_and_output_weights is None:
            return self.family != "llama"
        return not self.untie_embeddings_and_output_weights

    def resolved_activation(self) -> str:
        return self.activation or ("swiglu" if self.family == "llama" else "gelu")

    def resolved_ffn_hidden_size(self) -> int:
        if self.ffn_hidden_size:
            return self.ffn_hidden_size
        if self.family == "llama":
            # LLaMA: 2/3 of 4h for the gated MLP, rounded up to a multiple of 64.
            return ((8 * self.hidden_size // 3 + 63) // 64) * 64
        return 4 * self.hidden_size

    def validate_parallel_layout(self, world_size: Optional[int] = None):
        """The one check that this model splits over its TP x PP sizes (and, given, the world
        size): heads, query groups and vocabulary over TP, layers over PP. ValueError naming
        the flag to change; needs nothing but the sizes (launch planning calls it too)."""
        tp = self.tensor_model_parallel_size or 1
        pp = self.pipeline_model_parallel_size or 1
        if world_size is not None:
            runtime.validate_layout(world_size, tp, pp)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"--hidden-size {self.hidden_size} is not divisible by --num-attention-heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % tp:
            raise ValueError(
                f"--num-attention-heads {self.num_attention_heads} is not divisible by "
                f"--tensor-model-parallel-size {tp}; change one of them"
            )
        groups = self.num_query_groups or self.num_attention_heads
        if self.num_attention_heads % groups or groups % tp:
            raise ValueError(
                f"--num-query-groups {groups} must divide --num-attention-heads and be divisible "
                f"by --tensor-model-parallel-size {tp}"
            )
        if self.num_layers % pp:
            raise ValueError(
                f"--num-layers {self.num_layers} is not divisible by "
                f"--pipeline-model-parallel-size {pp}; change one of them"
            )
        if self.sequence_parallel and tp == 1:
            raise ValueError("--sequence-parallel needs --tensor-model-parallel-size > 1")
        if self.vocab_size % tp:
            raise ValueError(
                f"the (padded) vocabulary {self.vocab_size} is not divisible by "
                f"--tensor-model-parallel-size {tp}; change one of them"
            )

    def validate(self, world_size: Optional[int] = None):
        """Raise ValueError naming the flag to change. Runs before any compute."""
        if self.family not in FAMILIES:
            raise ValueError(f"--model-family {self.family!r}: choose one of {', '.join(FAMILIES)}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if self.true_vocab_size is not None and not 0 < self.true_vocab_size <= self.vocab_size:
            raise ValueError(f"true vocabulary {self.true_vocab_size} must be in 1..{self.vocab_size}")
        if self.transformer_impl not in ("local", "transformer_engine"):
            raise ValueError("--transformer-impl must be 'local' or 'transformer_engine'")
        self.validate_parallel_layout(world_size)
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 are exclusive: pass only one of them")
        if self.fp8_format is not None:
            if self.fp8_format not in ("hybrid", "e4m3"):
                raise ValueError("--fp8-format must be 'hybrid' or 'e4m3'")
            if self.transformer_impl != "transformer_engine":
                raise ValueError("--fp8-format needs --transformer-impl transformer_engine")
            available, why = runtime.fp8_available()
            if not available:
                raise ValueError(f"--fp8-format {self.fp8_format} is unavailable: {why}; drop --fp8-format")
        if self.transformer_impl == "transformer_engine" and not runtime.transformer_engine_available():
            raise ValueError(
                "--transformer-impl transformer_engine needs Transformer Engine (pip install "
                "-e .[gpu], or the NVIDIA PyTorch container); use --transformer-impl local"
            )
        if self.recompute_granularity not in (None, "full", "selective"):
            raise ValueError("--recompute-granularity must be 'full' or 'selective'")
        if self.recompute_granularity == "full" and self.recompute_method not in ("uniform", "block"):
            raise ValueError("--recompute-granularity full needs --recompute-method uniform|block")
        if self.seq_length > (self.max_position_embeddings or self.seq_length):
            raise ValueError("--seq-length exceeds --max-position-embeddings")


def fused_kernels(args: ModelArgs) -> bool:
    """megatron-core's fusions (Megatron-LM's defaults) where their kernels exist: on CUDA with
    the Transformer Engine spec (TE brings fused attention, RoPE, weight-gradient accumulation;
    megatron-core's bias-GeLU / SwiGLU and bias-dropout fusions are torch.jit / torch.compile
    code). With the local spec (the CPU, or TE missing) every fusion stays off: the local path is
    the exact reference the alignment pass and the CPU tests rely on."""
    return runtime.cuda_in_use() and args.transformer_impl == "transformer_engine"


def activation_function(args: ModelArgs, fused: bool) -> tuple:
    """(activation_func, bias_activation_fusion) computing exactly `args`' activation.

    megatron-core's fused bias-GeLU (fusions/fused_bias_gelu.py, the only GeLU fusion it has
    with a bias and no GLU) is the tanh approximation and TransformerConfig accepts only F.gelu
    for it: GPT-2's gelu_tanh runs it (as F.gelu), exact GeLU runs unfused."""
    name = args.resolved_activation()
    if name == "gelu_tanh":
        return (F.gelu, True) if fused else (gelu_tanh, False)
    if name == "gelu":
        return F.gelu, False
    return F.silu, fused  # bias-SwiGLU is exact


def transformer_config(args: ModelArgs) -> TransformerConfig:
    llama = args.family == "llama"
    gated = args.resolved_activation() == "swiglu"
    fused = fused_kernels(args)
    activation, bias_activation_fusion = activation_function(args, fused)
    tp = args.tensor_model_parallel_size or parallel_state.get_tensor_model_parallel_world_size()
    pp = args.pipeline_model_parallel_size or parallel_state.get_pipeline_model_parallel_world_size()
    params_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32
    recompute_num_layers = args.recompute_num_layers
    if args.recompute_granularity == "full" and recompute_num_layers is None:
        recompute_num_layers = 1
    return TransformerConfig(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        num_query_groups=args.num_query_groups,
        ffn_hidden_size=args.resolved_ffn_hidden_size(),
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        init_method_std=args.init_method_std,
        kv_channels=args.kv_channels,
        normalization="RMSNorm" if llama else "LayerNorm",
        layernorm_epsilon=args.norm_epsilon,
        gated_linear_unit=gated,
        activation_func=activation,
        # megatron-core's (left, right) window; HF's sliding window counts the query itself.
        window_size=(args.sliding_window - 1, 0) if args.sliding_window else None,
        add_bias_linear=not llama,
        bias_activation_fusion=bias_activation_fusion,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        persist_layer_norm=False,  # apex's FusedLayerNorm only; the TE spec has its own norms
        apply_rope_fusion=fused and llama,
        # megatron-core's own output layer needs apex's fused_weight_gradient_mlp_cuda for it
        gradient_accumulation_fusion=fused and runtime.gradient_accumulation_fusion_available(),
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=args.sequence_parallel,
        pipeline_dtype=params_dtype,
        params_dtype=params_dtype,
        bf16=args.bf16,
        fp16=args.fp16,
        fp8=args.fp8_format,
        recompute_granularity=args.recompute_granularity,
        recompute_method=args.recompute_method,
        recompute_num_layers=recompute_num_layers,
        use_cpu_initialization=args.use_cpu_initialization,
        # Loss functions return (sum, token count); the schedule and DDP then normalise by the
        # global number of target tokens, which loss masks make differ between microbatches.
        calculate_per_token_loss=True,
        # The contrastive alignment pass reads the output of every layer; keep them as normal
        # tensors rather than megatron's "viewless" ones.
        deallocate_pipeline_outputs=False,
        # No CUDA graphs are captured; megatron-core 0.19's default ("full") warns that it is
        # deprecated at every config, the empty list means the same.
        cuda_graph_modules=[],
    )


def layer_spec(args: ModelArgs, config: TransformerConfig):
    normalization = "RMSNorm" if args.family == "llama" else "LayerNorm"
    if args.transformer_impl == "transformer_engine":
        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization=normalization)
    spec.submodules.input_layernorm = local_norm(normalization)
    spec.submodules.pre_mlp_layernorm = local_norm(normalization)
    return spec


def decoder_spec(args: ModelArgs, config: TransformerConfig, vp_stage: Optional[int] = None):
    spec = layer_spec(args, config)
    if args.transformer_impl == "transformer_engine":
        return spec  # TE's spec brings its own final norm
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[spec] * num_layers, layer_norm=local_norm(config.normalization))


def build_gpt_model(
    args: ModelArgs,
    config: Optional[TransformerConfig] = None,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    vp_stage: Optional[int] = None,
) -> GPTModel:
    """One GPTModel chunk for this rank's pipeline stage (parallel_state must be initialized)."""
    config = config or transformer_config(args)
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    llama = args.family == "llama"
    model = GPTModel(
        config=config,
        transformer_layer_spec=decoder_spec(args, config, vp_stage),
        vocab_size=args.vocab_size,
        max_sequence_length=args.max_position_embeddings or args.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=args.tied_embeddings(),
        position_embedding_type="rope" if llama else "learned_absolute",
        rotary_base=args.rotary_base,
        rope_scaling=args.rope_scaling_factor is not None,
        rope_scaling_factor=args.rope_scaling_factor or 8.0,
        seq_len_interpolation_factor=args.rotary_seq_len_interpolation_factor,
        vp_stage=vp_stage,
    )
    if post_process and args.true_vocab_size is not None and args.true_vocab_size < args.vocab_size:
        model.output_layer.register_forward_hook(_padded_vocab_mask(args.true_vocab_size), with_kwargs=True)
    return model


def _padded_vocab_mask(true_vocab_size: int):
    """Forward hook of the output layer: the logits of padding rows become the dtype's minimum,
    so no softmax, loss or argmax ever sees them. The logits are this rank's vocabulary shard,
    or the whole vocabulary when the layer gathered them (megatron-core's inference mode passes
    ``runtime_gather_output=True``: KV-cache generation)."""

    def hook(module, inputs, kwargs, output):
        logits, bias = output
        gathered = kwargs.get("runtime_gather_output")
        if gathered is None:
            gathered = module.gather_output
        local = logits.shape[-1]
        start = 0 if gathered else parallel_state.get_tensor_model_parallel_rank() * local
        if start + local <= true_vocab_size:
            return output
        ids = torch.arange(start, start + local, device=logits.device)
        return logits.masked_fill(ids >= true_vocab_size, torch.finfo(logits.dtype).min), bias

    return hook


def build_model(
    args: ModelArgs,
    wrap_with_ddp: bool = True,
    use_distributed_optimizer: bool = False,
    overlap_grad_reduce: bool = False,
    overlap_param_gather: bool = False,
) -> List[torch.nn.Module]:
    """Model chunks for this rank, as Megatron-LM's `get_model` builds them: on the device,
    wrapped in `Float16Module` for bf16/fp16 and in megatron-core's DDP."""
    config = transformer_config(args)
    model = build_gpt_model(args, config)
    model.to(runtime.device())
    chunks = [model]
    if args.bf16 or args.fp16:
        chunks = [Float16Module(config, chunk) for chunk in chunks]
    if wrap_with_ddp:
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=overlap_grad_reduce,
            overlap_param_gather=overlap_param_gather,
            use_distributed_optimizer=use_distributed_optimizer,
        )
        chunks = [
            DistributedDataParallel(config=config, ddp_config=ddp_config, module=chunk)
            for chunk in chunks
        ]
        for chunk in chunks:
            chunk.broadcast_params()
    return chunks


def count_parameters(args: ModelArgs) -> dict:
    """Parameter counts of the full (unsharded) model, from the formulas of GPTModel's layers."""
    h, layers, ffn = args.hidden_size, args.num_layers, args.resolved_ffn_hidden_size()
    llama = args.family == "llama"
    groups = args.num_query_groups or args.num_attention_heads
    head_dim = h // args.num_attention_heads
    bias = 0 if llama else 1
    qkv = h * (h + 2 * groups * head_dim) + bias * (h + 2 * groups * head_dim)
    proj = h * h + bias * h
    fc1_out = 2 * ffn if llama else ffn
    mlp = h * fc1_out + bias * fc1_out + ffn * h + bias * h
    norm = h if llama else 2 * h
    per_layer = qkv + proj + mlp + 2 * norm
    non_embedding = layers * per_layer + norm
    embedding = args.vocab_size * h
    positions = 0 if llama else (args.max_position_embeddings or args.seq_length) * h
    output = embedding if llama else 0
    return {
        "non_embedding": non_embedding,
        "embedding": embedding + positions + output,
        "total": non_embedding + embedding + positions + output,
    }
