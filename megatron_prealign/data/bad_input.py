"""One error type for bad user input, always naming the file and the line.

Tools either raise :class:`BadInputError` or, with ``--skip-bad-lines``, count the line in a
:class:`SkipCounter` and report the counts in their summary.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from megatron_prealign.errors import BadInputError


class SkipCounter:
    """Counts skipped lines per reason; ``raise_or_count`` implements ``--skip-bad-lines``."""

    def __init__(self, skip_bad_lines: bool) -> None:
        self.skip_bad_lines = skip_bad_lines
        self.reasons: Counter = Counter()
        self.first: Optional[str] = None

    def raise_or_count(self, error: BadInputError) -> None:
        if not self.skip_bad_lines:
            raise error
        self.reasons[error.message.split(":")[0]] += 1
        if self.first is None:
            self.first = str(error)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        if not self.total:
            return "0"
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.reasons.items()))
        return f"{self.total} ({detail}; first: {self.first})"
