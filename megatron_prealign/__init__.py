"""megatron-prealign: PreAlign multilingual pretraining on megatron-core."""

__version__ = "0.1.0"
