"""Failed-login counting: at most ``limit`` failures per key in a sliding ``window``, in bounded memory.

A key (a username, a client address) that reached ``limit`` failures within the last ``window`` seconds is
blocked until its oldest counted failure ages out; ``retry_after`` says how long. At most ``max_keys`` keys
are kept: past that the least recently failed key is forgotten (an attacker spraying names can only evict
others' counters, never grow memory). Pure: the clock is injected, one instance per application.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FailureLimiter"]


@dataclass(slots=True)
class FailureLimiter:
    limit: int
    window: float  # seconds
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0 or self.max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` may try again (>= 1), or None when it is not blocked."""
        now = self.clock()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def fail(self, key: str) -> float:
        """Count a failure now; returns its time (for ``forgive``)."""
        now = self.clock()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(now)
        return now

    def forgive(self, key: str, at: float) -> None:
        """Take back the one failure counted at ``at`` (an attempt counted in advance that succeeded)."""
        times = self._failures.get(key)
        if times is not None and at in times:
            times.remove(at)
            if not times:
                del self._failures[key]

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
