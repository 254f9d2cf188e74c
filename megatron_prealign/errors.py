"""The project's one error class for bad configuration or input.

Entry points turn a :class:`ConfigError` into a one-line message and exit status 2; any other
exception (also a ``ValueError`` from inside torch or megatron-core) keeps its traceback.
"""

import errno
import json
import os
import sys
import time


class ConfigError(ValueError):
    """Bad flags, files or checkpoints; the message names what to change."""


class EvaluationError(ConfigError):
    """Bad input to an evaluation (checkpoint, table, data): the message says what to change."""


def describe_os_error(error: OSError, path: str) -> str:
    """A message for a failed write that names the directory (and says so for a full disk)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if error.errno == errno.ENOSPC:
        return f"no space left on device while writing {path} (directory {directory}): free space and rerun"
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path} (directory {directory})"
    return f"cannot write {path} (directory {directory}): {error.strerror or error}"


def report(message: str, prog: str = "") -> int:
    """Print a configuration error and return exit status 2.

    Under torchrun the message also goes to the worker's error file, so that torchrun's
    ChildFailedError summary (printed after the workers' output) ends with it rather than with a
    pointer to its docs: the user sees what to change last, not above 30 lines of traceback.
    """
    text = f"{prog}: error: {message}" if prog else f"error: {message}"
    print(text, file=sys.stderr, flush=True)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as handle:
                json.dump({"message": text, "timestamp": int(time.time())}, handle)
        except OSError:
            pass  # the message is on stderr already
    return 2
