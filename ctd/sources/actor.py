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
from ctd.errors import StoreError, cap, describe
from ctd.guard import Guard, load_guard
from ctd.model import (
    ALLOWLISTED,
    FIELD,
    MALFORMED,
    UNSUPPORTED_PATTERN,
    UNSUPPORTED_TYPE,
    Batch,
    PullContext,
    PullProgress,
    Rejected,
    iso,
    now,
)
from ctd.policy import deadline, expected, next_attempt, real_cause
from ctd.rates import Histogram
from ctd.sources import progress
from ctd.sources import values as plugin_values
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
    held: int = 0  # re-reports of values an operator retracted, kept retracted (ctd/store/holds.py)
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
        self.unrecorded_error: str | None = None  # a failure the store could not write (full disk): written later
        self.progress: PullProgress | None = None  # the pull running now, and when it started
        self.pull_started = 0.0
        self.pulls = {"ok": 0, "failed": 0}  # since this actor started (metrics: counters)
        self.pull_seconds = Histogram()

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
            "progress": progress.describe(self.progress, self.pull_started, trio.current_time())
            if self.progress is not None
            else None,
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
    resume, earlier = plugin_values.split(cp.sub)
    configured = plugin_values.current(plugin)
    used = plugin_values.merged(configured, earlier)  # plugin-level values this cycle has applied
    ctx = PullContext(
        since=cp.last_run if cp.last_run is not None else cycle_start - int(plugin.initial_range),
        now=cycle_start,
        cursor=cp.cursor,
        sub_checkpoint=resume,
    )
    status.progress, status.pull_started = ctx.progress, started
    fresh = cp.sub is None
    # Parse the next batch while the store commits this one.
    send, recv = trio.open_memory_channel[Any](1)

    async def produce(make_rows: Callable[..., list], threaded: bool) -> None:
        async with send:
            try:
                async with aclosing(adapter.pull(ctx)) as batches:
                    async for batch in batches:
                        refused: list[Rejected] = []  # sightings the value gate refuses (a third-party adapter's)
                        if threaded:  # warning-list matching is CPU work: ~1.6-2 us per value
                            rows = await trio.to_thread.run_sync(partial(make_rows, batch.sightings, rejected=refused))
                        else:
                            rows = make_rows(batch.sightings, rejected=refused)
                        if refused:
                            batch = msgspec.structs.replace(batch, rejected=[*batch.rejected, *refused])
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
                nursery.start_soon(progress.report, ctx.progress, started)
                async with recv:
                    async for item in recv:
                        if isinstance(item, Exception):
                            failure = item
                            break
                        batch, rows = item
                        ctx.progress.records += len(batch.sightings) + len(batch.rejected)
                        kept = _rejected_rows(batch, rows)
                        try:
                            res = await store.ingest(
                                IngestBatch(
                                    source=name,
                                    rows=rows,
                                    policy=plugin.reconcile,
                                    aging_days=plugin.aging_days,
                                    now=now(),
                                    fresh=fresh or batch.snapshot_start,
                                    snapshot_end=batch.snapshot_end,
                                    sub=plugin_values.with_used(batch.sub_checkpoint, used),
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
                nursery.cancel_scope.cancel()  # the progress reporter: the producer has finished
            if failure is not None:
                raise failure
        if (dropped := plugin_values.dropped(used, configured)) is not None:
            # A reload changed tags/reputation mid-pull: what was committed before it gets the current ones.
            await store.reapply_plugin_values(
                name, tags=plugin.tags, dropped=dropped, reputation=plugin.reputation, now=now()
            )
        await store.complete_pull(name, cycle_start, now())
    except BaseException as exc:
        status.progress = None
        if not isinstance(exc, trio.Cancelled):
            status.pulls["failed"] += 1
            status.pull_seconds.observe(trio.current_time() - started)
            status.last_error = describe(real_cause(exc))
            status.failures += 1
            status.last_counts = counts
            status.totals.add(counts)
            status.state = "idle"
        raise
    status.progress = None
    status.pulls["ok"] += 1
    status.pull_seconds.observe(trio.current_time() - started)
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
    counts.held += res.held
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
    if res.held:
        # The source re-reports values an operator retracted: they stay retracted (ctd/store/holds.py).
        log.warning(
            "source re-reported values an operator retracted; kept retracted",
            ctd_event="indicator_retraction_kept",
            ctd_count=res.held,
            examples=list(res.held_examples),
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
            examples=[cap(f"{r.where}: {r.reason}") for r in batch.rejected[:5]],
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
        delay = await _first_delay(name, plugin, store, status)
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


async def _first_delay(name: str, plugin: PluginConfig, store: Store, status: SourceStatus) -> float:
    """How long after start the first pull is due. A store that cannot answer does not stop the actor:
    it pulls at once, and that pull's failure is handled (and backed off) like any other."""
    try:
        cp = await store.checkpoint(name)
    except Exception as exc:
        log.error("source cannot read its checkpoint", ctd_event="source_pull_failed", error=describe(exc))
        return 0.0
    status.last_success = cp.last_success
    status.last_error = cp.last_error
    if cp.last_run is None or cp.sub is not None or cp.last_error is not None:
        return 0.0  # never pulled, a pull was interrupted, or the last one failed: go now
    return max(0.0, cp.last_run + float(plugin.sync_interval) - now())


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
    failures = status.failures
    if status.unrecorded_error is not None and await _write_error(store, name, status.unrecorded_error):
        status.unrecorded_error = None
    try:
        result = await pull_once(name, plugin, adapter, store, allowlist, status, on_commit)
        return result, interval
    except Exception as exc:
        cause = real_cause(exc)
        if status.failures == failures:  # it failed before pull_once's own bookkeeping (its checkpoint read)
            status.failures += 1
            status.last_error = describe(cause)
        await report_failure(store, name, cause, status)
        status.state, delay = next_attempt(cause, status.failures, interval=interval)
        return PullResult(source=name, error=describe(cause)), delay


async def report_failure(
    store: Store, name: str, exc: BaseException, status: SourceStatus | None = None
) -> BaseException:
    """Log a failed pull (``source_pull_failed``; a bug with its traceback) and record it; returns its real cause.

    The daemon's source actors and ``ctd run --once`` report a failure the same way.
    """
    cause = real_cause(exc)
    if not expected(cause):
        log.error("source pull crashed", ctd_event="source_pull_failed", exc_info=cause)
    await _record_failure(store, name, cause, status, logged=not expected(cause))
    return cause


async def _record_failure(
    store: Store, name: str, exc: BaseException, status: SourceStatus | None, logged: bool = False
) -> None:
    """Log the failure and record it as the source's last_error; what the store cannot write
    (a full disk) stays in ``status`` and is written before the next attempt."""
    msg = describe(exc)
    if not logged:
        log.error("source pull failed", ctd_event="source_pull_failed", error=msg, error_type=type(exc).__name__)
    recorded = await _write_error(store, name, msg, log_failure=True)
    if status is not None:
        status.unrecorded_error = None if recorded else msg


async def _write_error(store: Store, name: str, msg: str, *, log_failure: bool = False) -> bool:
    """Record ``msg`` as the source's last_error; False (never an exception) if the store cannot."""
    try:
        await store.record_error(name, msg)
    except Exception as exc:
        if log_failure:
            log.warning(
                "pull failure not recorded: the store cannot write it (kept in memory)",
                ctd_event="failure_not_recorded",
                error=msg,
                store_error=describe(exc),
                exc_info=None if isinstance(exc, StoreError) else exc,
            )
        return False
    return True
