"""The command-line tools (`prealign-*` console scripts; `tools/*.py` wrap them).

Importing this package (every entry point does, before megatron-core) calls :func:`quiet_notes`:
the library itself leaves the process's warning filters and loggers alone.

Each tool parses and checks its arguments before it imports what its work needs (torch,
megatron-core, transformers, and lighter packages such as tqdm that ``--help`` would pay for):
the imports inside the tools' ``main`` functions are deliberate (tests/test_startup.py,
bench/startup.py).
"""

import logging
import warnings


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_notes() -> None:
    """Silence what a user cannot act on: megatron-core's import-time notes that optional kernels
    (TE, apex) are absent, torch's checkpoint-reader deprecations, the dataset-index cache note
    (we pass --data-cache-path through when given; without it the indexes are simply rebuilt),
    megatron-core 0.19's note at every GPTModel that HybridModel is its successor
    (docs/architecture.md says why we stay) and at every save that its async strategy is
    deprecated, its experimental multimodal config, a rank looked up before torch.distributed
    starts, and torch's note, on a machine without CUDA, that it found no CUDA runtime."""
    warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex|apex).*not installed.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed\.checkpoint")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.distributed\.checkpoint")
    warnings.filterwarnings("ignore", message=r"MimoModelConfig is experimental")
    warnings.filterwarnings("ignore", message=r"Could not determine rank from torch\.distributed")
    for name, fragment in (
        ("megatron.core.datasets.blended_dataset", "path_to_cache is None"),
        ("megatron.core.datasets.gpt_dataset", "path_to_cache is None"),
        ("megatron.core.models.gpt.gpt_model", "GPTModel IS DEPRECATED"),
        # printed for our synchronous saves too (they go through its "mcore" async strategy)
        ("megatron.core.dist_checkpointing.strategies.torch", "MCore's async save is deprecated"),
        ("torch.utils.cpp_extension", "No CUDA runtime is found"),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessage(fragment))


quiet_notes()
