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


# Seconds: a feed read in under a second up to a many-hour first pull of a large source.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 3600, 14400)


class Histogram:
    """Observed durations in fixed buckets (cumulative counts as Prometheus wants them), constant memory."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # observations <= buckets[i]
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
