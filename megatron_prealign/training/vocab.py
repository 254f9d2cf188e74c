"""The model's vocabulary size, in one place for the driver and the launch planner.

Megatron-LM pads the tokenizer's vocabulary to a multiple of ``--make-vocab-size-divisible-by``
(128) x TP so the embedding splits evenly over TP ranks. That makes the default depend on TP, so
a resume at another TP keeps the checkpoint's padded size whenever it still divides evenly.
"""

from typing import Optional

from megatron_prealign.errors import ConfigError

DIVISIBLE_BY = 128  # Megatron-LM's --make-vocab-size-divisible-by


def pad_vocab_size(vocab_size: int, tensor_parallel: int, divisible_by: int = DIVISIBLE_BY) -> int:
    """Megatron-LM's padding: the next multiple of --make-vocab-size-divisible-by x TP."""
    multiple = divisible_by * tensor_parallel
    return -(-vocab_size // multiple) * multiple


def padded_vocab_size(tokens: int, tensor_parallel: int, requested: Optional[int] = None,
                      checkpoint: Optional[int] = None) -> int:
    """`tokens`: the tokenizer's (or En-Clone's) vocabulary; `requested`: --padded-vocab-size;
    `checkpoint`: the vocabulary of the checkpoint being resumed."""
    suggestion = pad_vocab_size(tokens, tensor_parallel)
    if requested is not None:
        if requested < tokens:
            raise ConfigError(f"--padded-vocab-size {requested} is smaller than the tokenizer's {tokens} "
                              f"tokens; use e.g. {suggestion}")
        if requested % tensor_parallel:
            raise ConfigError(
                f"--padded-vocab-size {requested} is not divisible by --tensor-model-parallel-size "
                f"{tensor_parallel}; use a multiple of {tensor_parallel}, e.g. {suggestion} "
                f"({DIVISIBLE_BY} x TP, as Megatron-LM pads)")
        return requested
    if checkpoint is not None and checkpoint >= tokens:
        if checkpoint % tensor_parallel:
            working = [tp for tp in (1, 2, 4, 8, 16, 32, 64) if checkpoint % tp == 0]
            raise ConfigError(
                f"the checkpoint's vocabulary of {checkpoint} rows does not split over "
                f"--tensor-model-parallel-size {tensor_parallel}; resume at a TP that divides it "
                f"({', '.join(map(str, working))}), or start a new run with --padded-vocab-size "
                f"{suggestion}")
        return checkpoint
    return suggestion
