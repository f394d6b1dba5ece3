"""The store actor: sole owner of the SQLite connection.

Everyone else holds a ``StoreClient`` (a :class:`ctd.store.api.Store`). Each
named method asks the actor with one request (:func:`ctd.ask.ask`); the actor
performs it in its worker thread (``CapacityLimiter(1)``: one transaction at a
time) with :func:`ctd.store.engine.execute` and answers with an ``outcome``.
A requester that was cancelled simply never reads its reply; one still waiting
when the actor stops gets ``StoreClosed``.

Nothing waits long behind a large ingest (issue 14): while requests queue
behind one another, a batch of more than ``ctd.store.slices.SLICE_ROWS`` rows
is merged a slice (one short transaction) at a time, and what arrived
meanwhile is served between two slices: requests are served in arrival order,
a sliced batch taking its turn again after them.

What an operator polls never waits behind ingest: after every request that
changed something the worker reads the maintained counters (a few dozen rows,
``ctd.store.tally``) in the same call, and the client answers ``counts``,
``source_counts`` and ``ledger_counts`` from that snapshot. Backups and
integrity checks run on a read connection of their own beside the writer.

Errors (``ctd.store.health``): a full disk fails the request with
``StoreFull`` and the actor serves on (reads still work; the first write that
succeeds after space returns clears it); at start it makes the actor wait for
space instead of ending the daemon. A damaged database ("malformed") fails the
request with ``StoreDamaged``, is logged once, and stops the actor: every
later request fails at once with the same message.
"""

from __future__ import annotations

import os
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import structlog
import trio

from ctd.ask import Ask, answer, ask, close_inbox
from ctd.errors import StoreClosed, StoreDamaged, StoreError, StoreFull
from ctd.store import engine, health, preflight, slices, tally
from ctd.store.api import Store, StoreStatistics
from ctd.store.health import Health
from ctd.store.requests import _Request
from ctd.store.slices import Job

log = structlog.get_logger("ctd.store")

INBOX_SIZE = 8
# Waiting for space at start: the first retry soon, then every 30 s at most.
OPEN_RETRY_FIRST, OPEN_RETRY_CAP = 1.0, 30.0

HealthHook = Callable[[Health], None]


class _Shared:
    """What the actor updates and its clients read (one trio thread: no lock needed)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.health = Health()
        self.counts = tally.Counts(indicators={"total": 0, "active": 0, "by_type": {}}, sources={}, ledgers={})
        self.handled = 0
        self.busy = 0.0
        self.queued: Callable[[], int] = lambda: 0


class StoreClient(Store):
    """The handle actors use to talk to the SQLite store actor; never touch its channel directly."""

    def __init__(self, send: trio.MemorySendChannel[Ask], shared: _Shared) -> None:
        self._send = send
        self._shared = shared
        self._beside = trio.CapacityLimiter(1)  # one backup or check at a time

    async def _execute(self, request: _Request) -> Any:
        shared = self._shared
        if isinstance(request, engine.BESIDE):
            return await self._run_beside(request)
        if shared.health.state == health.DAMAGED:
            raise StoreDamaged(shared.health.problem or "the database is damaged")
        try:
            return await ask(self._send, request, who="the store", stopped=StoreClosed)
        except StoreClosed:
            if shared.health.state == health.DAMAGED:  # it stopped on a damaged database meanwhile
                raise StoreDamaged(shared.health.problem or "the database is damaged") from None
            raise

    async def _run_beside(self, request: _Request) -> Any:
        """A backup or an integrity check, on its own connection in its own thread: the writer goes on."""
        path = self._shared.path
        try:
            return await trio.to_thread.run_sync(engine.execute_beside, path, request, limiter=self._beside)
        except (sqlite3.Error, OSError) as exc:
            raise health.classify(exc, path) from None

    def statistics(self) -> StoreStatistics:
        s = self._shared
        return StoreStatistics(
            queued=s.queued(),
            handled=s.handled,
            busy_seconds=s.busy,
            state=s.health.state,
            problem=s.health.problem,
            since=s.health.since,
        )

    def engine_versions(self) -> dict[str, str]:
        return dict(engine.ENGINE_VERSIONS)

    # The counts an operator polls: from the snapshot, without a request.

    async def counts(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return self._shared.counts.indicators

    async def source_counts(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return dict(self._shared.counts.sources)

    async def ledger_counts(self, sharing: str) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return tally.ledger(self._shared.counts, sharing)


def _open(path: str, check: bool) -> tuple[sqlite3.Connection, tally.Counts]:
    """Check the file (``ctd.store.preflight``), then open and migrate it; in the worker thread."""
    if check:
        preflight.check_database(path)
    conn = engine.connect(path)
    try:
        return conn, tally.read(conn)
    except BaseException:
        conn.close()
        raise


async def _open_waiting_for_space(
    path: str, limiter: trio.CapacityLimiter, shared: _Shared, on_health: HealthHook | None, check: bool, wait: bool
) -> sqlite3.Connection:
    """Open the store; while state_dir is full, say so and retry instead of ending the daemon."""
    delay = OPEN_RETRY_FIRST
    while True:
        try:
            conn, shared.counts = await trio.to_thread.run_sync(_open, path, check, limiter=limiter)
        except (sqlite3.Error, OSError) as exc:
            err = health.classify(exc, path)
            if not isinstance(err, StoreFull):
                raise err from exc
            full: StoreError = err
        except StoreFull as exc:
            full = exc
        else:
            if shared.health.set(health.OK, None):
                log.info("store has space again", ctd_event="store_recovered", path=path)
                _tell(on_health, shared.health)
            return conn
        if not wait:
            raise full
        if shared.health.set(health.FULL, str(full)):
            log.error(
                "store cannot open: waiting for space",
                ctd_event="store_full",
                path=path,
                error=str(full),
            )
            _tell(on_health, shared.health)
        await trio.sleep(delay)
        delay = min(OPEN_RETRY_CAP, delay * 2)


def _tell(hook: HealthHook | None, state: Health) -> None:
    if hook is not None:
        hook(state)


async def run_store(
    path: str,
    *,
    on_health: HealthHook | None = None,
    check: bool = True,
    wait_for_space: bool = True,
    task_status: trio.TaskStatus[StoreClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own the database at ``path`` and serve requests until cancelled, or until it turns out damaged.

    ``check``: look the file over first (``ctd.store.preflight``: ``StartupError`` if it must not be
    opened). ``on_health`` is told every change of the store's health (full, recovered, damaged).
    ``wait_for_space``: while state_dir is full, wait and retry (the daemon); False: raise ``StoreFull``.
    """
    limiter = trio.CapacityLimiter(1)
    shared = _Shared(path)
    conn = await _open_waiting_for_space(path, limiter, shared, on_health, check, wait_for_space)
    send, recv = trio.open_memory_channel[Ask](INBOX_SIZE)
    jobs: deque[Job] = deque()
    shared.queued = lambda: recv.statistics().current_buffer_used + len(jobs)
    contended = [-slices.CONTENDED_S]  # when a request last had to queue behind another
    log.info("store opened", path=path, ctd_event="store_opened")
    try:
        task_status.started(StoreClient(send, shared))
        while True:
            if not jobs:
                try:
                    jobs.append(_job(await recv.receive()))
                except trio.EndOfChannel:
                    break
            _take_queued(recv, jobs, contended)
            job = jobs.popleft()
            t0 = trio.current_time()
            limit = slices.SLICE_ROWS if t0 - contended[0] < slices.CONTENDED_S else None
            try:
                finished, result = await _run(conn, job, limit, limiter, shared)
            except BaseException:
                job.reply.close()  # nobody waits on a cancelled store
                raise
            shared.busy += trio.current_time() - t0
            if not finished:
                _take_queued(recv, jobs, contended)  # what arrived during this slice goes first
                jobs.append(job)
                continue
            shared.handled += 1
            damaged = _after(result, shared, on_health)
            answer(job.reply, result)
            if damaged:
                break  # stop: every later request fails at once with the same message
    finally:
        for job in jobs:
            job.reply.close()
        close_inbox(recv)
        conn.close()
        log.info("store closed", ctd_event="store_closed")


def _take_queued(recv: trio.MemoryReceiveChannel[Ask], jobs: deque[Job], contended: list[float]) -> None:
    """Move what is waiting in the inbox behind ``jobs``, in order (never more than the inbox holds).

    A request found waiting arrived while another was being served: the store is contended.
    """
    while len(jobs) < INBOX_SIZE:
        try:
            jobs.append(_job(recv.receive_nowait()))
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        contended[0] = trio.current_time()


def _job(msg: Any) -> Job:
    if not isinstance(msg, Ask):
        raise AssertionError(f"store got an unknown message: {msg!r}")
    return Job(msg.request, msg.reply)


def _perform(conn: sqlite3.Connection, job: Job, limit: int | None) -> tuple[bool, Any, tally.Counts | None]:
    """One step of ``job``, and a fresh snapshot of the counters if it changed anything (worker thread)."""
    before = conn.total_changes
    finished, result = job.step(conn, limit)
    return finished, result, (tally.read(conn) if conn.total_changes != before else None)


async def _run(
    conn: sqlite3.Connection, job: Job, limit: int | None, limiter: trio.CapacityLimiter, shared: _Shared
) -> tuple[bool, outcome.Outcome[Any]]:
    """One step of ``job``: whether the job is finished, and its outcome if so (an error finishes it)."""
    try:
        finished, result, counts = await trio.to_thread.run_sync(_perform, conn, job, limit, limiter=limiter)
    except (sqlite3.Error, OSError) as exc:
        err = health.classify(exc, shared.path)
        log.error("store operation failed", error=str(exc), request=type(job.request).__name__)
        return True, outcome.Error(err)
    except AssertionError:
        raise  # a request the backend does not know is a bug: fail loudly
    except Exception as exc:
        return True, outcome.Error(exc)
    if counts is not None:
        shared.counts = counts
    return finished, outcome.Value(result)


def _after(result: outcome.Outcome[Any], shared: _Shared, on_health: HealthHook | None) -> bool:
    """Track the store's health from one outcome; True if the database turned out damaged."""
    state = shared.health
    if isinstance(result, outcome.Error):
        err = result.error
        if isinstance(err, StoreDamaged):
            if state.set(health.DAMAGED, str(err)):
                log.error(
                    "database damaged: the store stopped; restore a backup (docs/operations.md, Restore)",
                    ctd_event="store_damaged",
                    path=shared.path,
                    error=str(err),
                )
                _tell(on_health, state)
            return True
        if isinstance(err, StoreFull) and state.set(health.FULL, str(err)):
            log.error("state_dir full: writes fail until space returns", ctd_event="store_full", error=str(err))
            _tell(on_health, state)
        return False
    if state.state == health.FULL and not health.disk_full(_directory(shared.path)):
        state.set(health.OK, None)
        log.info("store has space again", ctd_event="store_recovered", path=shared.path)
        _tell(on_health, state)
    return False


def _directory(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))
