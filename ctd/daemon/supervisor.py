"""Per-actor cancel scopes: start, stop and restart actors by name on reload.

An unchanged actor is never touched, so its in-flight work carries on.

An actor that fails with an exception (an adapter that cannot even be built,
a bug) is logged with its traceback and marked failed; the daemon and every
other actor carry on. Its handle stays listed (``ctdctl status`` shows the
state and the error) but takes no more requests (``close()``); the next reload
starts it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from ctd.errors import describe
from ctd.policy import real_cause

log = structlog.get_logger("ctd.supervisor")


class _Running:
    def __init__(self, scope: trio.CancelScope, config: Any, handle: Any) -> None:
        self.scope = scope
        self.config = config
        self.handle = handle
        self.done = trio.Event()
        self.failed = False


class Supervisor:
    """Owns a nursery and one cancel scope per named actor."""

    def __init__(self, nursery: trio.Nursery, kind: str) -> None:
        self._nursery = nursery
        self._kind = kind
        self._running: dict[str, _Running] = {}

    def names(self) -> list[str]:
        return sorted(self._running)

    def get(self, name: str) -> Any:
        r = self._running.get(name)
        return r.handle if r else None

    def failed(self) -> list[str]:
        """The actors that ended with an error (a reload starts them again)."""
        return sorted(name for name, r in self._running.items() if r.failed)

    async def start(self, name: str, config: Any, handle: Any, run: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``run(*args, task_status=...)`` under its own cancel scope and wait until it is started."""

        async def wrapper(task_status: trio.TaskStatus[_Running]) -> None:
            with trio.CancelScope() as scope:
                entry = _Running(scope, config, handle)
                forward = _Forward(task_status, entry)
                try:
                    await run(*args, task_status=forward)
                except* Exception as group:  # never trio.Cancelled: a stop or reload passes through
                    self._failed(name, entry, group)
                    if not forward.done:
                        forward.started()  # the start goes on without it
                finally:
                    entry.done.set()
                    if self._running.get(name) is entry and not entry.failed:
                        del self._running[name]
            if not scope.cancelled_caught and not entry.failed:
                log.warning("actor exited", kind=self._kind, name=name)

        entry: _Running = await self._nursery.start(wrapper)
        self._running[name] = entry

    def _failed(self, name: str, entry: _Running, group: BaseExceptionGroup[Exception]) -> None:
        cause = real_cause(group)
        entry.failed = True
        status = getattr(entry.handle, "status", None)
        if status is not None:
            status.state, status.last_error = "failed", describe(cause)
        close = getattr(entry.handle, "close", None)
        if close is not None:
            close()  # requests to it fail at once ("not running") instead of waiting
        log.error(
            "actor failed: the daemon carries on without it until the next reload",
            ctd_event="actor_failed",
            kind=self._kind,
            name=name,
            error=describe(cause),
            exc_info=cause,
        )

    async def stop(self, name: str) -> None:
        entry = self._running.pop(name, None)
        if entry is not None:
            entry.scope.cancel()
            await entry.done.wait()

    async def stop_all(self) -> None:
        for name in list(self._running):
            await self.stop(name)


class _Forward:
    """Pass ``started()`` through, handing the supervisor its bookkeeping entry."""

    def __init__(self, outer: trio.TaskStatus[_Running], entry: _Running) -> None:
        self._outer = outer
        self._entry = entry
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._outer.started(self._entry)
