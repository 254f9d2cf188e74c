"""The project's one error class for bad configuration or input.

Entry points turn a :class:`ConfigError` into a one-line message and exit status 2; any other
exception (also a ``ValueError`` from inside torch or megatron-core) keeps its traceback.
"""

import errno
import os


class ConfigError(ValueError):
    """Bad flags, files or checkpoints; the message names what to change."""


def describe_os_error(error: OSError, path: str) -> str:
    """A message for a failed write that names the directory (and says so for a full disk)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if error.errno == errno.ENOSPC:
        return f"no space left on device while writing {path} (directory {directory}): free space and rerun"
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path} (directory {directory})"
    return f"cannot write {path} (directory {directory}): {error.strerror or error}"
