"""Source actor: one per pulling plugin.

The actor owns scheduling, deadlines and backoff; the adapter only fetches and
parses. Each batch goes to the store together with the sub-checkpoint that
covers it, and the cycle's start becomes the checkpoint only once the whole
pull has been committed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from functools import partial
from typing import Any

import msgspec
import outcome
import structlog
import trio

from ctd.ask import Ask, answer, close_inbox
from ctd.config import PluginConfig
from ctd.errors import describe
from ctd.guard import Guard, load_guard
from ctd.model import (
    ALLOWLISTED,
    FIELD,
    MALFORMED,
    UNSUPPORTED_PATTERN,
    UNSUPPORTED_TYPE,
    Batch,
    PullContext,
    iso,
    now,
)
from ctd.policy import deadline, expected, next_attempt, real_cause
from ctd.store import KEEP_REJECTED, STAGE_COLUMNS, IngestBatch, IngestResult, RejectedRow, Store, to_stage_rows

log = structlog.get_logger("ctd.source")

WARNINGLIST_COLUMN = STAGE_COLUMNS.index("warninglist")
ALLOWLISTED_COLUMN = STAGE_COLUMNS.index("allowlisted")


class PullCounts(msgspec.Struct, kw_only=True):
    """What pulls did: the counts are defined here once."""

    new: int = 0
    updated: int = 0
    invalid: int = 0  # records rejected as malformed
    unsupported: int = 0  # well-formed records ctd cannot hold (a type, a STIX pattern)
    field_warnings: int = 0  # optional fields dropped from IoCs that were kept
    allowlisted: int = 0  # reports of allow-listed values (stored, never active)
    retracted: int = 0
    warninglisted: int = 0  # reports that hit the plugin's warning lists (ctd.guard)
    batches: int = 0

    def add(self, other: PullCounts) -> None:
        for f in PullCounts.__struct_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


class PullResult(PullCounts, kw_only=True):
    """One pull cycle: its counts, how long it took, and its error if it failed."""

    source: str
    duration_s: float = 0.0
    error: str | None = None


class SourceStatus:
    """Live state of one source actor, read by ``ctdctl status``/``sources``."""

    def __init__(self, name: str, plugin: PluginConfig) -> None:
        self.name = name
        self.adapter = plugin.adapter
        self.pull = plugin.pull
        self.state = "idle"
        self.last_run: int | None = None
        self.last_success: int | None = None
        self.last_error: str | None = None
        self.next_run: int | None = None
        self.last_counts = PullCounts()
        self.totals = PullCounts()
        self.failures = 0
        self.guard: Guard | None = None  # loaded and applied to the store at this actor's first pull

    def as_dict(self, indicators: int = 0) -> dict[str, Any]:
        return {
            "name": self.name,
            "adapter": self.adapter,
            "pull": self.pull,
            "state": self.state,
            "last_run": iso(self.last_run),
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "next_run": iso(self.next_run),
            "last_counts": msgspec.structs.asdict(self.last_counts),
            "totals": msgspec.structs.asdict(self.totals),
            "indicators": indicators,
        }


class AllowlistRef:
    """The current allowlist matcher; swapped on reload without restarting sources."""

    def __init__(self, current: Callable[[str, str], bool] | None = None) -> None:
        self.current = current


class PullNow(msgspec.Struct, frozen=True):
    """Ask a source actor to pull at once; the answer is the cycle's ``PullResult``."""


async def pull_once(
    name: str,
    plugin: PluginConfig,
    adapter: Any,
    store: Store,
    allowlist: AllowlistRef,
    status: SourceStatus,
    on_commit: Callable[[str, IngestResult], None] | None = None,
) -> PullResult:
    """Run one pull cycle to completion; raises the adapter's error after recording it."""
    started = trio.current_time()
    cycle_start = now()
    status.state = "pulling"
    status.last_run = cycle_start
    counts = PullCounts()
    cp = await store.checkpoint(name)
    ctx = PullContext(
        since=cp.last_run if cp.last_run is not None else cycle_start - int(plugin.initial_range),
        now=cycle_start,
        cursor=cp.cursor,
        sub_checkpoint=cp.sub,
    )
    fresh = cp.sub is None
    # Parse the next batch while the store commits this one.
    send, recv = trio.open_memory_channel[Any](1)

    async def produce(make_rows: Callable[[list], list], threaded: bool) -> None:
        async with send:
            try:
                async with aclosing(adapter.pull(ctx)) as batches:
                    async for batch in batches:
                        if threaded:  # warning-list matching is CPU work: ~1.6-2 us per value
                            rows = await trio.to_thread.run_sync(make_rows, batch.sightings)
                        else:
                            rows = make_rows(batch.sightings)
                        await send.send((batch, rows))
            except Exception as exc:
                await send.send(exc)

    failure: Exception | None = None
    try:
        with deadline(float(plugin.timeout), "pull"):
            guard = await _guard(name, plugin, store, status, cycle_start)
            make_rows = partial(
                to_stage_rows,
                now=cycle_start,
                reputation=plugin.reputation,
                extra_tags=plugin.tags,
                allowlisted=allowlist.current,
                warninglisted=guard.match,
                warninglist_tag=guard.tag,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, make_rows, guard.match is not None)
                async with recv:
                    async for item in recv:
                        if isinstance(item, Exception):
                            failure = item
                            break
                        batch, rows = item
                        kept = _rejected_rows(batch, rows)
                        try:
                            res = await store.ingest(
                                IngestBatch(
                                    source=name,
                                    rows=rows,
                                    policy=plugin.reconcile,
                                    aging_days=plugin.aging_days,
                                    now=now(),
                                    fresh=fresh,
                                    snapshot_end=batch.snapshot_end,
                                    sub=batch.sub_checkpoint,
                                    cursor=batch.cursor,
                                    rejected=kept,
                                )
                            )
                        except Exception as exc:
                            failure = exc
                            nursery.cancel_scope.cancel()
                            break
                        fresh = False
                        if on_commit is not None:
                            on_commit(name, res)
                        _count(counts, batch, res)
                        counts.warninglisted += sum(1 for r in rows if r[WARNINGLIST_COLUMN])
                        counts.allowlisted += sum(1 for r in rows if r[ALLOWLISTED_COLUMN])
                        _log_batch(name, batch, res)
            if failure is not None:
                raise failure
        await store.complete_pull(name, cycle_start, now())
    except BaseException as exc:
        if not isinstance(exc, trio.Cancelled):
            status.last_error = describe(real_cause(exc))
            status.failures += 1
            status.last_counts = counts
            status.totals.add(counts)
            status.state = "idle"
        raise
    status.last_success = now()
    status.last_error = None
    status.failures = 0
    status.last_counts = counts
    status.totals.add(counts)
    status.state = "idle"
    result = PullResult(
        source=name, duration_s=round(trio.current_time() - started, 3), **msgspec.structs.asdict(counts)
    )
    log.info(
        "source pull completed",
        ctd_event="source_pull_completed",
        new=counts.new,
        updated=counts.updated,
        invalid=counts.invalid,
        unsupported=counts.unsupported,
        field_warnings=counts.field_warnings,
        allowlisted=counts.allowlisted,
        retracted=counts.retracted,
        warninglisted=counts.warninglisted,
        batches=counts.batches,
        ctd_count=counts.new + counts.updated,
    )
    return result


async def _guard(name: str, plugin: PluginConfig, store: Store, status: SourceStatus, now: int) -> Guard:
    """The plugin's warning-list guard: loaded at the actor's first pull, and re-applied to what the
    source already reported if it changed since (``ctd.guard``)."""
    if status.guard is None:
        guard = await load_guard(plugin)
        await store.apply_guard(name, guard.signature, guard.match, tag=guard.tag, now=now)
        status.guard = guard
    return status.guard


# Which count each reason class adds to (allow-listed reports are counted from the stage rows).
_COUNTED = {
    MALFORMED: "invalid",
    UNSUPPORTED_TYPE: "unsupported",
    UNSUPPORTED_PATTERN: "unsupported",
    FIELD: "field_warnings",
}


def _count(counts: PullCounts, batch: Batch, res: IngestResult) -> None:
    counts.new += res.new
    counts.updated += res.updated
    counts.retracted += res.retracted
    for r in batch.rejected:
        name = _COUNTED.get(r.kind, "invalid")
        setattr(counts, name, getattr(counts, name) + 1)
    counts.batches += 1


def _rejected_rows(batch: Batch, rows: list) -> list[RejectedRow]:
    """What the store keeps of a batch's rejections: the last KEEP_REJECTED of each class (the store keeps
    no more), allow-listed reports included, named by their value since the adapter's position is gone."""
    out: dict[str, list[RejectedRow]] = {}
    for r in batch.rejected:
        out.setdefault(r.kind, []).append((r.kind, r.where, r.reason))
    for row in rows:
        if row[ALLOWLISTED_COLUMN]:
            out.setdefault(ALLOWLISTED, []).append(
                (ALLOWLISTED, f"{row[0]} {row[1]}", "on the allowlist: stored, never active")
            )
    return [r for rs in out.values() for r in rs[-KEEP_REJECTED:]]


def _log_batch(name: str, batch: Batch, res: IngestResult) -> None:
    log.debug(
        "batch ingested",
        ctd_event="batch_ingested",
        new=res.new,
        updated=res.updated,
        retracted=res.retracted,
        ctd_count=len(batch.sightings),
    )
    if batch.rejected:
        # One line per batch, never one per bad record; all of them are kept per source (sources show).
        by_kind: dict[str, int] = {}
        for r in batch.rejected:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
        log.warning(
            "records rejected",
            ctd_event="indicators_rejected_invalid",
            ctd_count=len(batch.rejected),
            by_class=by_kind,
            examples=[f"{r.where}: {r.reason}" for r in batch.rejected[:5]],
        )


async def run_source(
    name: str,
    plugin: PluginConfig,
    adapter: Any,
    store: Store,
    allowlist: AllowlistRef,
    status: SourceStatus,
    sync_requests: trio.MemoryReceiveChannel[Ask],
    on_commit: Callable[[str, IngestResult], None] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Pull on schedule and on demand (``Ask(PullNow())``) until cancelled."""
    structlog.contextvars.bind_contextvars(ctd_source=name)
    try:
        cp = await store.checkpoint(name)
        status.last_success = cp.last_success
        status.last_error = cp.last_error
        if cp.last_run is None or cp.sub is not None:
            delay = 0.0  # never pulled, or a pull was interrupted: go now
        else:
            delay = max(0.0, cp.last_run + float(plugin.sync_interval) - now())
        task_status.started()
        while True:
            status.next_run = now() + int(delay) if delay != float("inf") else None
            waiting: list[Ask] = []
            try:
                with trio.move_on_after(delay):
                    waiting.append(await sync_requests.receive())
                while True:  # collect every sync request already queued: one pull serves them all
                    try:
                        waiting.append(sync_requests.receive_nowait())
                    except trio.WouldBlock:
                        break
                status.next_run = None
                result, delay = await _pull(name, plugin, adapter, store, allowlist, status, on_commit)
                for req in waiting:
                    answer(req.reply, outcome.Value(result))
            finally:
                for req in waiting:
                    req.reply.close()  # cancelled mid-pull: the askers get an error, not a hang
    finally:
        close_inbox(sync_requests)


async def _pull(
    name: str,
    plugin: PluginConfig,
    adapter: Any,
    store: Store,
    allowlist: AllowlistRef,
    status: SourceStatus,
    on_commit: Callable[[str, IngestResult], None] | None,
) -> tuple[PullResult, float]:
    """One scheduled or requested pull: its result and the delay before the next one."""
    interval = float(plugin.sync_interval)
    try:
        result = await pull_once(name, plugin, adapter, store, allowlist, status, on_commit)
        return result, interval
    except Exception as exc:
        cause = await report_failure(store, name, exc)
        status.state, delay = next_attempt(cause, status.failures, interval=interval)
        return PullResult(source=name, error=describe(cause)), delay


async def report_failure(store: Store, name: str, exc: BaseException) -> BaseException:
    """Log a failed pull (``source_pull_failed``; a bug with its traceback) and record it; returns its real cause.

    The daemon's source actors and ``ctd run --once`` report a failure the same way.
    """
    cause = real_cause(exc)
    if not expected(cause):
        log.error("source pull crashed", ctd_event="source_pull_failed", exc_info=cause)
    await _record_failure(store, name, cause, logged=not expected(cause))
    return cause


async def _record_failure(store: Store, name: str, exc: BaseException, logged: bool = False) -> None:
    msg = describe(exc)
    if not logged:
        log.error("source pull failed", ctd_event="source_pull_failed", error=msg, error_type=type(exc).__name__)
    await store.record_error(name, msg)
