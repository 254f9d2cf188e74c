"""The project's errors for bad configuration or input: one hierarchy under :class:`ConfigError`.

Entry points turn a :class:`ConfigError` into a one-line message and exit status 2; any other
exception (also a ``ValueError`` from inside torch or megatron-core) keeps its traceback. Each
subclass says where the problem is; the modules that raise them import them from here.
"""

import errno
import json
import os
import sys
import time
from typing import Optional


class ConfigError(ValueError):
    """Bad flags, files or checkpoints; the message names what to change."""


class EvaluationError(ConfigError):
    """Bad input to an evaluation (checkpoint, table, data): the message says what to change."""


class BadInputError(ConfigError):
    """A malformed input line. ``str(err)`` is ``"FILE:LINE: message"``."""

    def __init__(self, path: str, line: Optional[int], message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


class LossMaskMismatchError(ConfigError):
    """The ``_loss_mask`` sibling does not describe the same sequences as the token data."""


class MissingPackagesError(ConfigError):
    """The Debian packages with the text are not installed (message says how to install)."""


class TemplateError(ConfigError):
    """A template or language code that cannot be used; the message says what to change."""


class ConversionError(ConfigError):
    """Bad input to a conversion: the message says what is wrong and what to change."""


class MergeError(ConfigError):
    """An input that cannot be merged; the message names the file and what to change."""


class ScalingLawError(ConfigError):
    """Points that cannot be fitted, or a law / budget that cannot be used; says what to change."""


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
