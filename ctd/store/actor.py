"""The store actor: sole owner of the SQLite connection.

Everyone else holds a ``StoreClient`` (a :class:`ctd.store.api.Store`). Each
named method asks the actor with one request (:func:`ctd.ask.ask`); the actor
performs it in its worker thread (``CapacityLimiter(1)``: one transaction at a
time) with :func:`ctd.store.engine.execute` and answers with an ``outcome``.
A requester that was cancelled simply never reads its reply; one still waiting
when the actor stops gets ``StoreClosed``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import outcome
import structlog
import trio

from ctd.ask import Ask, answer, ask, close_inbox
from ctd.errors import StoreClosed, StoreError
from ctd.store import engine
from ctd.store.api import Store, StoreStatistics
from ctd.store.requests import _Request

log = structlog.get_logger("ctd.store")

INBOX_SIZE = 8


class StoreClient(Store):
    """The handle actors use to talk to the SQLite store actor; never touch its channel directly."""

    def __init__(self, send: trio.MemorySendChannel[Ask], stats: Callable[[], StoreStatistics]) -> None:
        self._send = send
        self._stats = stats

    async def _execute(self, request: _Request) -> Any:
        return await ask(self._send, request, who="the store", stopped=StoreClosed)

    def statistics(self) -> StoreStatistics:
        return self._stats()

    def engine_versions(self) -> dict[str, str]:
        return dict(engine.ENGINE_VERSIONS)


async def run_store(path: str, *, task_status: trio.TaskStatus[StoreClient] = trio.TASK_STATUS_IGNORED) -> None:
    """Own the database at ``path`` and serve requests until cancelled."""
    limiter = trio.CapacityLimiter(1)
    conn: sqlite3.Connection = await trio.to_thread.run_sync(engine.connect, path, limiter=limiter)
    send, recv = trio.open_memory_channel[Ask](INBOX_SIZE)
    handled = 0
    busy = 0.0

    def stats() -> StoreStatistics:
        return StoreStatistics(queued=recv.statistics().current_buffer_used, handled=handled, busy_seconds=busy)

    log.info("store opened", path=path, ctd_event="store_opened")
    try:
        task_status.started(StoreClient(send, stats))
        async for msg in recv:
            if not isinstance(msg, Ask):
                raise AssertionError(f"store got an unknown message: {msg!r}")
            reply = msg.reply
            with reply:  # closed however this ends: nobody waits on a cancelled store
                t0 = trio.current_time()
                result = await _run(conn, msg.request, limiter)
                handled += 1
                busy += trio.current_time() - t0
                answer(reply, result)
    finally:
        close_inbox(recv)
        conn.close()
        log.info("store closed", ctd_event="store_closed")


async def _run(conn: sqlite3.Connection, request: Any, limiter: trio.CapacityLimiter) -> outcome.Outcome[Any]:
    try:
        return outcome.Value(await trio.to_thread.run_sync(engine.execute, conn, request, limiter=limiter))
    except sqlite3.Error as exc:
        log.error("store operation failed", error=str(exc))
        return outcome.Error(StoreError(f"database error: {exc}"))
    except AssertionError:
        raise  # a request the backend does not know is a bug: fail loudly
    except Exception as exc:
        return outcome.Error(exc)
