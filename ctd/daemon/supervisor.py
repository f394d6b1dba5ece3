"""Per-actor cancel scopes: start, stop and restart actors by name on reload.

An unchanged actor is never touched, so its in-flight work carries on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger("ctd.supervisor")


class _Running:
    def __init__(self, scope: trio.CancelScope, config: Any, handle: Any) -> None:
        self.scope = scope
        self.config = config
        self.handle = handle
        self.done = trio.Event()


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

    async def start(self, name: str, config: Any, handle: Any, run: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``run(*args, task_status=...)`` under its own cancel scope and wait until it is started."""

        async def wrapper(task_status: trio.TaskStatus[_Running]) -> None:
            with trio.CancelScope() as scope:
                entry = _Running(scope, config, handle)
                try:
                    await run(*args, task_status=_Forward(task_status, entry))
                finally:
                    entry.done.set()
                    if self._running.get(name) is entry:
                        del self._running[name]
            if not scope.cancelled_caught:
                log.warning("actor exited", kind=self._kind, name=name)

        entry: _Running = await self._nursery.start(wrapper)
        self._running[name] = entry

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

    def started(self, value: Any = None) -> None:
        self._outer.started(self._entry)
