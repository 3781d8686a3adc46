"""A log-line budget: at most ``limit`` lines per ``window`` seconds, so a flood (bad logins, malformed
requests) cannot flood the journal; the first line after a window that dropped some says how many."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LogBudget"]


@dataclass(slots=True)
class LogBudget:
    what: str  # names the dropped lines in the summary, e.g. "api login lines"
    limit: int = 20
    window: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _start: float = -float("inf")
    _count: int = 0
    _dropped: int = 0

    def take(self) -> str | None:
        """None: drop this line; else a suffix to append ("" or " (<what> suppressed=K window=Ws)")."""
        now = self.clock()
        suffix = ""
        if now - self._start >= self.window:
            if self._dropped:
                suffix = f" ({self.what} suppressed={self._dropped} window={self.window:g}s)"
            self._start, self._count, self._dropped = now, 0, 0
        self._count += 1
        if self._count > self.limit:
            self._dropped += 1
            return None
        return suffix
