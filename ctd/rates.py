"""Event rates over the last minute and hour, in one-minute buckets (constant memory)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateCounter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [minute, count], oldest first

    def add(self, n: int) -> None:
        if n <= 0:
            return
        minute = int(self._clock() // 60)
        if self._buckets and self._buckets[-1][0] == minute:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([minute, n])
        self._trim(minute)

    def _trim(self, minute: int) -> None:
        while self._buckets and self._buckets[0][0] <= minute - 60:
            self._buckets.popleft()

    def totals(self) -> dict[str, int]:
        """Events in the current and previous minute, and in the last hour."""
        minute = int(self._clock() // 60)
        self._trim(minute)
        last_minute = sum(c for m, c in self._buckets if m >= minute - 1)
        return {"last_minute": last_minute, "last_hour": sum(c for _, c in self._buckets)}
