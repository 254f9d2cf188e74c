"""Megatron-LM's ``--data-path`` list (``PREFIX ...`` or ``WEIGHT PREFIX ...``): its prefixes and
short names. Plain Python, so that argument validation can use it before torch is imported."""

from __future__ import annotations

import os
from typing import List


def data_prefixes(data_path: List[str]) -> List[str]:
    """The prefixes of Megatron-LM's --data-path (dropping the weights of a blend)."""
    if len(data_path) > 1 and len(data_path) % 2 == 0:
        try:
            [float(w) for w in data_path[0::2]]
            return data_path[1::2]
        except ValueError:
            pass
    return list(data_path)


def prefix_names(prefixes: List[str]) -> List[str]:
    """Short distinct names of data prefixes (for per-set validation losses): the basenames, or
    as much of the paths as tells them apart ("en/text_document", "de/text_document")."""
    parts = [os.path.normpath(p).split(os.sep) for p in prefixes]
    for depth in range(1, max(map(len, parts), default=0) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{p}#{i}" for i, p in enumerate(prefixes)]  # the same prefix given twice
