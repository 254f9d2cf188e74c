"""Text generation from a checkpoint of any TP / PP layout, with megatron-core's static KV cache.

:mod:`.decoding` is the loop (prefill once, then one token per step), :mod:`.sampling` picks the
next token, :mod:`.prompts` turns JSON-lines records into prompts, :mod:`.cli` is
``tools/generate.py``.
"""

from megatron_prealign.generation.decoding import Generation, generate  # noqa: F401
from megatron_prealign.generation.sampling import SamplingParams  # noqa: F401
