"""megatron-prealign: PreAlign and x-LLaMA multilingual training on megatron-core."""

import logging
import warnings

__version__ = "0.1.0"

# Silence what a user cannot act on, once for every entry point (each imports this package
# before megatron-core): megatron-core's import-time notes that optional kernels (TE, apex) are
# absent, torch's checkpoint-reader deprecations, the dataset-index cache note (we pass
# --data-cache-path through when given; without it the indexes are simply rebuilt), megatron-core
# 0.19's note at every GPTModel that HybridModel is its successor (docs/architecture.md says why
# we stay) and at every save that its async strategy is deprecated, and torch's note, on a
# machine without CUDA, that it found no CUDA runtime.
warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex|apex).*not installed.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed\.checkpoint")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.distributed\.checkpoint")
# megatron-core 0.19 at import: its multimodal config is experimental (we do not use it); and a
# rank looked up before torch.distributed starts (a single process's rank is 0, as it assumes).
warnings.filterwarnings("ignore", message=r"MimoModelConfig is experimental")
warnings.filterwarnings("ignore", message=r"Could not determine rank from torch\.distributed")


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


for _name, _fragment in (
    ("megatron.core.datasets.blended_dataset", "path_to_cache is None"),
    ("megatron.core.datasets.gpt_dataset", "path_to_cache is None"),
    ("megatron.core.models.gpt.gpt_model", "GPTModel IS DEPRECATED"),
    # printed for our synchronous saves too (they go through its "mcore" async strategy)
    ("megatron.core.dist_checkpointing.strategies.torch", "MCore's async save is deprecated"),
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
):
    logging.getLogger(_name).addFilter(_DropMessage(_fragment))
