"""megatron-prealign: PreAlign and x-LLaMA multilingual training on megatron-core."""

import logging
import warnings

__version__ = "0.1.0"

# Silence what a user cannot act on, once for every entry point (each imports this package
# before megatron-core): megatron-core's import-time notes that optional kernels (TE, apex) are
# absent, torch's checkpoint-reader deprecations, the dataset-index cache note (we pass
# --data-cache-path through when given; without it the indexes are simply rebuilt), megatron-core
# 0.19's note at every GPTModel that HybridModel is its successor (docs/migration.md says why we
# stay), and torch's note, on a machine without CUDA, that it found no CUDA runtime.
warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex|apex).*not installed.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed\.checkpoint")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.distributed\.checkpoint")


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
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
):
    logging.getLogger(_name).addFilter(_DropMessage(_fragment))
