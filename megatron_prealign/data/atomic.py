"""Atomic file output: write to a temporary name in the same directory, rename at the end.

An interrupted run therefore never leaves a file at the final path that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from typing import Iterator, TextIO

STAGING = ".incomplete"


def temp_path(path: str) -> str:
    """A temporary sibling of ``path`` (same directory, so ``os.replace`` is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def run_tag() -> str:
    """``HOST-PID`` of this process: names staging outputs so that a later run can tell a killed
    run's leftovers (same host, process gone) from a live run's (kept)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _abandoned(tag: str) -> bool:
    host, _, pid = tag.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's run (a shared file system): its state is unknown
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: alive
        pass
    return False


def remove_abandoned(directory: str, stem: str, suffix: str = "") -> None:
    """Remove files or directories ``{stem}HOST-PID-*{suffix}`` in ``directory`` whose process
    (on this host) is gone: what a killed run left behind."""
    pattern = re.compile(re.escape(stem) + r"(?P<tag>.+-\d+)-[A-Za-z0-9_]+" + re.escape(suffix) + "$")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            match = pattern.match(name)
            if match and _abandoned(match.group("tag")):
                path = os.path.join(directory, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)


def staging_directory(path: str) -> str:
    """A new, empty directory next to ``path`` for building it, unique to this run (never a name
    another run could share, also for ``path`` given with a trailing slash); abandoned staging
    of ``path`` is removed first. Rename it to ``path`` when complete."""
    parent, name = os.path.split(os.path.normpath(os.path.abspath(path)))
    stem = f".{name}{STAGING}-"
    os.makedirs(parent, exist_ok=True)  # as a plain write of `path` would need it
    remove_abandoned(parent, stem)
    staging = tempfile.mkdtemp(dir=parent, prefix=f"{stem}{run_tag()}-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would follow the output into place
    return staging


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
