"""A large ingest batch merged as a run of short transactions (issue 14: latency under load).

The store has one writer. A source's batch of 20,000 rows is one transaction
of most of a second on a busy 2-core machine; everything else that writes (a
sharing's plan and ledger, another source's small batch) or just reads waits
behind it, and a sharing pass makes several requests in a row. The actor
therefore merges a batch of more than ``SLICE_ROWS`` rows slice by slice, and
serves whatever else is queued between two slices (``ctd.store.actor``).

What a slice commits is a state a smaller ``batch_size`` would have produced,
except that only the last slice moves the source's resume point: the first
slice opens the snapshot generation (``fresh``), the last one ends the
snapshot, records the rejections and stores ``sub`` and ``cursor``; the
slices before it store the resume point the source had before the batch. A
crash between two slices therefore resumes at the start of the batch and
reads its first slices again, which ingest makes harmless (a re-report).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from ctd.ask import Reply
from ctd.store import engine, holds, sql
from ctd.store.requests import IngestBatch, IngestResult

# Rows per transaction: a few tens of milliseconds each at 1M IoCs on a small machine.
SLICE_ROWS = 2_000


def sliced(batch: IngestBatch) -> bool:
    """Is ``batch`` merged in slices?"""
    return len(batch.rows) > SLICE_ROWS


def slices(batch: IngestBatch, resume: dict | None) -> list[IngestBatch]:
    """``batch`` as slices of at most ``SLICE_ROWS`` rows; ``resume``: the source's resume point before it."""
    rows = batch.rows
    starts = range(0, len(rows), SLICE_ROWS)
    last = len(starts) - 1
    return [
        msgspec.structs.replace(
            batch,
            rows=rows[start : start + SLICE_ROWS],
            fresh=batch.fresh and n == 0,
            snapshot_end=batch.snapshot_end and n == last,
            sub=batch.sub if n == last else resume,
            cursor=batch.cursor if n == last else None,  # None: keep the stored one
            rejected=batch.rejected if n == last else (),
        )
        for n, start in enumerate(starts)
    ]


def resume_point(conn: sqlite3.Connection, source: str) -> dict | None:
    """The source's stored resume point (worker thread)."""
    return sql.get_checkpoint(conn, source).sub


def merged(results: list[IngestResult]) -> IngestResult:
    """One result for the whole batch, as if it had been merged in one transaction."""
    examples: tuple[str, ...] = ()
    for r in results:
        examples += r.held_examples
    return IngestResult(
        new=sum(r.new for r in results),
        updated=sum(r.updated for r in results),
        retracted=sum(r.retracted for r in results),
        held=sum(r.held for r in results),
        held_examples=examples[: holds.EXAMPLES],
    )


class Job:
    """A request the store actor is serving: done in one step, or (a large ingest) one slice per step."""

    def __init__(self, request: Any, reply: Reply) -> None:
        self.request = request
        self.reply = reply
        self._left: list[IngestBatch] | None = None  # the slices not merged yet
        self._results: list[IngestResult] = []

    def step(self, conn: sqlite3.Connection) -> tuple[bool, Any]:
        """Do the next step (worker thread): whether the request is done, and its result if so."""
        request = self.request
        if not (isinstance(request, IngestBatch) and sliced(request)):
            return True, engine.execute(conn, request)
        if self._left is None:
            self._left = slices(request, resume_point(conn, request.source))
        self._results.append(engine.execute(conn, self._left.pop(0)))
        if self._left:
            return False, None
        return True, merged(self._results)
