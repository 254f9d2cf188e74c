"""Pure-PyTorch LayerNorm / RMSNorm for the local (non-Transformer-Engine) layer spec.

megatron-core's `WrappedTorchNorm` refuses sequence parallelism, and its `FusedLayerNorm` needs
apex. Under sequence parallelism each TP rank sees a different slice of the sequence, so the
norm's weight gradients must be summed over the TP group; megatron-core's
`finalize_model_grads` does that for every parameter marked `sequence_parallel`, which is all
this wrapper adds (as `FusedLayerNorm` does).
"""

import torch

from megatron.core.transformer.transformer_config import TransformerConfig


def _check_config(config: TransformerConfig, normalization: str):
    if config.layernorm_zero_centered_gamma:
        raise ValueError("layernorm_zero_centered_gamma needs --transformer-impl transformer_engine")
    if config.normalization != normalization:
        raise ValueError(f"config.normalization is {config.normalization!r}, this norm is {normalization}")


def _mark_sequence_parallel(norm: torch.nn.Module, config: TransformerConfig):
    for param in norm.parameters():
        setattr(param, "sequence_parallel", config.sequence_parallel)


# Both take the constructor signature megatron-core's specs use for norms.
class LocalLayerNorm(torch.nn.LayerNorm):
    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused):
        _check_config(config, "LayerNorm")
        super().__init__(hidden_size, eps=eps)
        _mark_sequence_parallel(self, config)


class LocalRMSNorm(torch.nn.RMSNorm):
    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused):
        _check_config(config, "RMSNorm")
        super().__init__(hidden_size, eps=eps)
        _mark_sequence_parallel(self, config)


def local_norm(normalization: str) -> type:
    """The norm class of the local spec for megatron-core's `normalization` name."""
    norms = {"LayerNorm": LocalLayerNorm, "RMSNorm": LocalRMSNorm}
    if normalization not in norms:
        raise ValueError(f"unsupported normalization {normalization!r}: use LayerNorm or RMSNorm")
    return norms[normalization]
