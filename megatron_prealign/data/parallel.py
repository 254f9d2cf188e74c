"""Ordered, bounded parallel map for streaming tools."""

from __future__ import annotations

import collections
from typing import Callable, Iterable, Iterator


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
