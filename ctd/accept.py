"""Accepting connections without spinning, and logging what a flood repeats without flooding the log.

Shared by the control socket (``ctd.control.limits``) and the ``edl`` adapter's
web server. It lives in the core because the core never imports an adapter;
adapters may import it (tests/test_imports.py says so). It imports nothing of
ctd.

Resource handling:
    ``accept()`` failing for want of descriptors or memory (EMFILE, ENFILE,
    ENOBUFS, ENOMEM) is retried after a back-off growing from 0.1 s to 2 s,
    with one warning a minute (counting the failures it did not log) and one
    info line once accepting works again. trio's own ``serve_listeners`` logs a
    traceback every 100 ms instead, for as long as the shortage lasts.

Error handling:
    Any other accept error propagates to the caller.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, Final

import trio

__all__ = ["CAPACITY_ERRNOS", "LOG_INTERVAL", "AcceptBackoff", "LogLimiter"]

CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_FIRST: Final = 0.1  # seconds
BACKOFF_MAX: Final = 2.0
LOG_INTERVAL: Final = 60.0  # seconds between two warnings about the same thing
_MAX_LOG_KEYS: Final = 1024


class LogLimiter:
    """At most one log line per key per ``interval`` (trio time); counts the ones held back.

    The table of keys is bounded: past ``_MAX_LOG_KEYS`` keys the quiet ones are
    forgotten, so a flood from many peers costs bounded memory.
    """

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Hashable, float] = {}
        self._held: Counter[Hashable] = Counter()

    def check(self, key: Hashable) -> int | None:
        """``None``: stay quiet. Otherwise log now, with this many held back since the last line."""
        now = trio.current_time()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return None
        if len(self._last) >= _MAX_LOG_KEYS:  # many peers: forget the quiet ones
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            self._held = Counter({k: n for k, n in self._held.items() if k in self._last})
        self._last[key] = now
        return self._held.pop(key, 0)


class AcceptBackoff:
    """``accept()`` on a listener, waiting out a shortage of descriptors or memory; logs sparingly.

    ``log`` is the caller's structlog logger; events are ``<event>_accept_failed``
    (warning, at most one a minute) and ``<event>_accept_recovered`` (info).
    ``context`` adds fields to the warning (e.g. the connections open).
    """

    def __init__(self, log: Any, *, what: str, event: str, context: Callable[[], dict[str, Any]] = dict) -> None:
        self.log = log
        self.what = what
        self.event = event
        self.context = context
        self.delay = BACKOFF_FIRST
        self.failures = 0
        self._limiter = LogLimiter()

    async def accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection; raises any accept error other than a shortage."""
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                await self._wait(exc)
                continue
            self._reset()
            return stream

    async def _wait(self, exc: OSError) -> None:
        self.failures += 1
        held = self._limiter.check("accept")
        if held is not None:
            self.log.warning(
                f"{self.what} cannot accept connections; backing off",
                ctd_event=f"{self.event}_accept_failed",
                error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                reason=os.strerror(exc.errno or 0),
                retry_in_s=self.delay,
                suppressed=held,
                **self.context(),
            )
        await trio.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    def _reset(self) -> None:
        if self.failures:
            self.log.info(
                f"{self.what} accepting again", ctd_event=f"{self.event}_accept_recovered", failures=self.failures
            )
        self.failures = 0
        self.delay = BACKOFF_FIRST
