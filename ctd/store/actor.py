"""The store actor: sole owner of the SQLite connection.

Everyone else holds a ``StoreClient``. Each request carries a one-shot reply
channel; the actor runs the matching synchronous SQL function in its worker
thread (``CapacityLimiter(1)``: one transaction at a time) and answers with an
``outcome``. A requester that was cancelled simply never reads its reply.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import outcome
import structlog
import trio

from ctd.store import sql as store_sql
from ctd.errors import StoreClosed, StoreError
from ctd.model import SEVERITY_RANK, DEFAULT_REPUTATION, Sighting

log = structlog.get_logger("ctd.store")

INBOX_SIZE = 8
_tags_enc = msgspec.json.Encoder()


class Ingest(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    rows: Sequence[tuple]
    policy: str
    aging_days: int
    now: int
    fresh: bool
    snapshot_end: bool
    sub: dict | None
    cursor: dict | None
    reply: trio.MemorySendChannel


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``fn(conn, *args, **kwargs)`` from ``store_sql``/``store_query`` in the store thread."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = {}
    reply: trio.MemorySendChannel


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    queued: int
    handled: int
    busy_seconds: float


class StoreClient:
    """The handle actors use to talk to the store; never touch its channel directly."""

    def __init__(self, send: trio.MemorySendChannel, stats: Callable[[], StoreStatistics]) -> None:
        self._send = send
        self._stats = stats

    async def _ask(self, make: Callable[[trio.MemorySendChannel], Any]) -> Any:
        reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome](1)
        try:
            await self._send.send(make(reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StoreClosed("the store is shut down") from None
        async with reply_recv:
            try:
                result = await reply_recv.receive()
            except trio.EndOfChannel:
                raise StoreClosed("the store stopped before answering") from None
        return result.unwrap()

    async def ingest(self, **kw: Any) -> store_sql.IngestResult:
        return await self._ask(lambda r: Ingest(reply=r, **kw))

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._ask(lambda r: Call(fn=fn, args=args, kwargs=kwargs, reply=r))

    def statistics(self) -> StoreStatistics:
        return self._stats()


def to_stage_rows(
    sightings: Sequence[Sighting],
    *,
    now: int,
    reputation: int | None,
    extra_tags: Sequence[str],
    allowlisted: Callable[[str, str], bool] | None,
) -> list[tuple]:
    """Turn an adapter's sightings into staged rows, applying the plugin's overrides."""
    rank = SEVERITY_RANK
    enc = _tags_enc.encode
    extra = tuple(extra_tags)
    rows = []
    append = rows.append
    for s in sightings:
        tags = s.tags
        if extra:
            tags = tuple(sorted(set(tags).union(extra)))
        elif len(tags) > 1:
            tags = tuple(sorted(set(tags)))  # the store's tag union is sorted and distinct too
        last = s.last_seen if s.last_seen is not None else now
        first = s.first_seen if s.first_seen is not None else last
        append((
            s.type, s.value, first, last,
            reputation or s.reputation or DEFAULT_REPUTATION,
            rank.get(s.severity, 0),
            enc(tags).decode() if tags else "[]",
            s.comments, s.reference, s.expires_at,
            1 if s.retracted else 0,
            1 if allowlisted is not None and allowlisted(s.type, s.value) else 0,
        ))
    return rows


async def run_store(path: str, *, task_status: trio.TaskStatus[StoreClient] = trio.TASK_STATUS_IGNORED) -> None:
    """Own the database at ``path`` and serve requests until cancelled."""
    limiter = trio.CapacityLimiter(1)
    conn: sqlite3.Connection = await trio.to_thread.run_sync(store_sql.connect, path, limiter=limiter)
    send, recv = trio.open_memory_channel[Any](INBOX_SIZE)
    handled = 0
    busy = 0.0

    def stats() -> StoreStatistics:
        return StoreStatistics(queued=recv.statistics().current_buffer_used, handled=handled, busy_seconds=busy)

    log.info("store opened", path=path, ctd_event="store_opened")
    try:
        async with recv:
            task_status.started(StoreClient(send, stats))
            async for msg in recv:
                t0 = trio.current_time()
                match msg:
                    case Ingest():
                        fn: Callable[[], Any] = lambda m=msg: store_sql.ingest(  # noqa: E731
                            conn, source=m.source, rows=m.rows, policy=m.policy,
                            aging_days=m.aging_days, now=m.now, fresh=m.fresh,
                            snapshot_end=m.snapshot_end, sub=m.sub, cursor=m.cursor,
                        )
                    case Call():
                        fn = lambda m=msg: m.fn(conn, *m.args, **m.kwargs)  # noqa: E731
                    case _:
                        raise AssertionError(f"store got an unknown message: {msg!r}")
                result = await _run(fn, limiter)
                handled += 1
                busy += trio.current_time() - t0
                try:
                    msg.reply.send_nowait(result)
                except (trio.BrokenResourceError, trio.WouldBlock, trio.ClosedResourceError):
                    pass  # the requester went away; its work is committed anyway
    finally:
        conn.close()
        log.info("store closed", ctd_event="store_closed")


async def _run(fn: Callable[[], Any], limiter: trio.CapacityLimiter) -> outcome.Outcome:
    try:
        return outcome.Value(await trio.to_thread.run_sync(fn, limiter=limiter))
    except sqlite3.Error as exc:
        log.error("store operation failed", error=str(exc))
        return outcome.Error(StoreError(f"database error: {exc}"))
    except Exception as exc:  # noqa: BLE001 - handed to the requester, not swallowed
        return outcome.Error(exc)
