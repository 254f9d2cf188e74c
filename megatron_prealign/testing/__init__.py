"""Fixtures shared by the test suite and the benchmarks (like ``numpy.testing`` /
``torch.testing``): not part of the training system.

* :mod:`megatron_prealign.testing.random_batches`: random alignment microbatches (word groups of
  random tokens), so that alignment tests and benchmarks need no tokenizer or alignment table;
* :mod:`megatron_prealign.testing.pretrain_case`: built-in synthetic data prepared with the real
  tools and a small argument list for the training driver.

This package may import any part of the library; no library module imports it
(tests/test_architecture.py).
"""
