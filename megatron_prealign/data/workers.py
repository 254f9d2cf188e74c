"""Parallel work for the streaming tools (preprocessing, instruction data, word counting): the
one pipeline they share (:func:`parallel_map` over a pool of worker processes, outputs committed
all together or not at all by :class:`AllOrNothing`) and the split of input files between machines.

    with AllOrNothing() as outputs, parallel_map(work, items, workers, init, args) as results:
        writer = outputs.add(PairedIndexedWriter(prefix, vocab_size))
        for result in results:
            writer.add_documents(...)
    # every writer committed here; after an exception every writer was aborted instead
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import multiprocessing
import os
from typing import Callable, Iterable, Iterator, List, Optional, Sequence


def ordered_bounded_map(pool, fn: Callable, items: Iterable, max_in_flight: int) -> Iterator:
    """Like ``pool.imap(fn, items)``, results in input order, but never more than
    ``max_in_flight`` items submitted ahead of the consumer. (``Pool.imap`` reads the whole input
    ahead of the workers, so memory would not stay bounded on large corpora.)
    """
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= max_in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@contextlib.contextmanager
def parallel_map(fn: Callable, items: Iterable, workers: int, initializer: Optional[Callable] = None,
                 initargs: tuple = ()) -> Iterator[Iterator]:
    """Results of ``fn`` over ``items`` in input order: in ``workers`` forked processes (each run
    through ``initializer(*initargs)`` first) with at most ``2 * workers`` items in flight, or in
    this process for one worker (``initializer`` is then the caller's to run). The pool is
    terminated when the block ends, also on an error."""
    if workers <= 1:
        yield map(fn, items)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = context.Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield ordered_bounded_map(pool, fn, items, 2 * workers)
    finally:
        pool.terminate()
        pool.join()


class AllOrNothing(contextlib.AbstractContextManager):
    """Outputs (anything with ``commit()`` and ``abort()``, e.g. ``PairedIndexedWriter``) that are
    all committed when the block ends normally and all aborted when it raises, so a failed run
    never leaves a complete-looking output behind and never replaces an old one."""

    def __init__(self):
        self.outputs: list = []

    def add(self, output):
        self.outputs.append(output)
        return output

    def __exit__(self, kind, error, traceback):
        if kind is None:
            for output in self.outputs:
                output.commit()
        else:
            for output in self.outputs:
                output.abort()
        return False


def partition_files(files: Sequence[str], partitions: int, index: int,
                    sizes: Optional[Sequence[int]] = None) -> List[str]:
    """The input files of partition ``index`` (0-based) of ``partitions``, for several machines
    that each preprocess a share of a corpus (``--partitions``).

    Partitions are contiguous runs of ``files`` (their order is kept, so merging the partitions
    in index order keeps the input order), balanced by size: a file goes to the partition its
    middle byte falls in, and every partition gets at least one file. The result depends only on
    the file list and sizes, so every machine computes the same split.
    """
    if not 1 <= partitions <= len(files):
        raise ValueError(f"--partitions {partitions}: must be between 1 and the number of input "
                         f"files ({len(files)}); use fewer partitions or split the input files")
    if not 0 <= index < partitions:
        raise ValueError(f"--partition-index {index}: must be in [0, {partitions})")
    if sizes is None:
        sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes) or 1
    middles, before = [], 0
    for size in sizes:
        middles.append(before + size / 2)
        before += size
    bounds = [0]
    for k in range(1, partitions):
        start = bisect.bisect_left(middles, k * total / partitions)
        bounds.append(min(max(start, bounds[-1] + 1), len(files) - (partitions - k)))
    bounds.append(len(files))
    return list(files[bounds[index] : bounds[index + 1]])


def partition_prefix(prefix: str, index: int, partitions: int) -> str:
    """Output prefix of one partition: ``PREFIX-part00003-of-00008`` (sorts in index order)."""
    return f"{prefix}-part{index:05d}-of-{partitions:05d}"
