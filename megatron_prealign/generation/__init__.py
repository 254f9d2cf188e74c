"""Text generation from a checkpoint of any TP / PP layout, with megatron-core's static KV cache.

:mod:`.decoding` is the loop (prefill once, then one token per step), :mod:`.sampling` picks the
next token, :mod:`.prompts` turns JSON-lines records into prompts, :mod:`.cli` is
``tools/generate.py``.
"""

import importlib

# Re-exported on first access (PEP 562), so that `tools/generate.py --help` (which imports
# .cli, hence this package) does not import torch.
_EXPORTS = {"Generation": "decoding", "generate": "decoding", "SamplingParams": "sampling"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
