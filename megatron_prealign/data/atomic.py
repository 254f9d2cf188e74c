"""Atomic file output: write to a temporary name in the same directory, rename at the end.

An interrupted run therefore never leaves a file at the final path that looks finished.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, TextIO


def temp_path(path: str) -> str:
    """A temporary sibling of ``path`` (same directory, so ``os.replace`` is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_text_writer(path: str, encoding: str = "utf-8") -> Iterator[TextIO]:
    """Open ``path`` for writing text; the file appears only if the block finishes."""
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding=encoding) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_figure(figure, path: str, dpi: int = 110) -> str:
    """Lay out, save (atomically: a PNG appears only complete) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    tmp = temp_path(path) + ".png"  # savefig picks the format from the suffix
    try:
        figure.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path
