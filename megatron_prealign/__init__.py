"""megatron-prealign: PreAlign and x-LLaMA multilingual training on megatron-core."""

__version__ = "0.1.0"
