"""Small parts the vendor emulators share: a clock, bearer tokens that expire, rate windows.

The clock is trio's when a trio run is active (tests with ``autojump_clock``
move token expiry and rate windows by jumping time) and ``time.monotonic()``
otherwise (the standalone servers). An emulator instance uses one or the other
for its whole life.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio


def clock() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # no trio run active: a standalone server thread
        return time.monotonic()


class Tokens:
    """Bearer tokens with a time to live; ``expire_all()`` lets a test force a refresh."""

    def __init__(self, ttl: float, prefix: str, now: Callable[[], float] = clock) -> None:
        self.ttl = ttl
        self.prefix = prefix
        self.now = now
        self.issued: dict[str, float] = {}  # token -> time it expires
        self.grants = 0  # tokens handed out (a test checks refresh happened)
        self._n = itertools.count(1)

    def issue(self) -> str:
        self.grants += 1
        token = f"{self.prefix}-{next(self._n)}"
        self.issued[token] = self.now() + self.ttl
        return token

    def valid(self, token: str | None) -> bool:
        return token is not None and token in self.issued and self.now() < self.issued[token]

    def expire_all(self) -> None:
        for token in self.issued:
            self.issued[token] = float("-inf")


class Windows:
    """Sliding call windows per key: ``(calls, seconds)`` limits, e.g. 100/min and 1500/hour."""

    def __init__(self, now: Callable[[], float] = clock) -> None:
        self.now = now
        self.calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def take(self, key: str, limits: tuple[tuple[int, float], ...]) -> float | None:
        """Count a call; None if allowed, else seconds until it would be (the call is not counted)."""
        t = self.now()
        seen = self.calls[key]
        longest = max((w for _, w in limits), default=0.0)
        while seen and seen[0] <= t - longest:
            seen.popleft()
        wait = 0.0
        for count, window in limits:
            inside = [c for c in seen if c > t - window]
            if len(inside) >= count:
                wait = max(wait, inside[len(inside) - count] + window - t)
        if wait > 0:
            return wait
        seen.append(t)
        return None

    def remaining(self, key: str, count: int, window: float) -> int:
        t = self.now()
        return max(0, count - sum(1 for c in self.calls[key] if c > t - window))


def form(request: httpx.Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (last value wins)."""
    from urllib.parse import parse_qs

    return {k: v[-1] for k, v in parse_qs(request.content.decode(errors="replace")).items()}


def json_body(request: httpx.Request) -> Any:
    """The JSON body, or raise ValueError."""
    return json.loads(request.content or b"null")


def bearer(request: httpx.Request, scheme: str = "bearer") -> str | None:
    auth = request.headers.get("authorization", "")
    word, _, token = auth.partition(" ")
    return token.strip() if word.lower() == scheme.lower() and token.strip() else None
