"""What lets the real GPU code run and be checked on a CPU, kept apart from the model code.

* :mod:`megatron_prealign.compat.cpu`: the CPU compatibility layer (gloo, megatron-core's CUDA-only
  calls mapped to the CPU for the tested megatron-core release); applied by
  ``runtime.select_backend`` when no CUDA device is in use.
* :mod:`megatron_prealign.compat.device_check`: the device check mode (tests, or
  ``PREALIGN_DEVICE_CHECK=1``): fails a CPU run where a CUDA run would find a tensor on the wrong
  device; entered and left by ``runtime``.

Only ``runtime`` (and tests) import this package; the model, training and evaluation code do not.
"""
