"""Pure-PyTorch LayerNorm / RMSNorm for the local (non-Transformer-Engine) layer spec.

megatron-core's `WrappedTorchNorm` refuses sequence parallelism, and its `FusedLayerNorm` needs
apex. Under sequence parallelism each TP rank sees a different slice of the sequence, so the
norm's weight gradients must be summed over the TP group; megatron-core's
`finalize_model_grads` does that for every parameter marked `sequence_parallel`, which is all
this wrapper adds (as `FusedLayerNorm` does).
"""

import torch

from megatron.core.transformer.transformer_config import TransformerConfig


class LocalNorm:
    """Factory with the constructor signature megatron-core's specs use for norms."""

    def __new__(
        cls,
        config: TransformerConfig,
        hidden_size: int,
        eps: float = 1e-5,
        persist_layer_norm: bool = False,
        zero_centered_gamma: bool = False,
        normalization: str = "LayerNorm",
    ):
        if config.layernorm_zero_centered_gamma:
            raise ValueError("layernorm_zero_centered_gamma needs --transformer-impl transformer_engine")
        kind = config.normalization
        if kind == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        elif kind == "RMSNorm":
            norm = torch.nn.RMSNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"unsupported normalization {kind!r}: use LayerNorm or RMSNorm")
        for param in norm.parameters():
            setattr(param, "sequence_parallel", config.sequence_parallel)
        return norm
