"""A large ingest batch merged as a run of short transactions while others wait (issue 14: latency).

The store has one writer. A source's batch of 20,000 rows is one transaction
of most of a second on a busy 2-core machine; everything else that writes (a
sharing's plan and ledger, another source's small batch) or just reads waits
behind it, and a sharing pass makes several requests in a row. So while the
store is contended (``ctd.store.actor``: a request had to queue behind another
in the last ``CONTENDED_S`` seconds) the actor merges a large batch
``SLICE_ROWS`` rows at a time and serves what is queued between two slices.
Slices cost ingest: every commit writes the index pages its rows touched, and
a slice's rows share fewer pages (measured at 1M IoCs: new IoCs ~40-60% slower
in slices of 2,000), so a store with nothing else to do merges each batch in
one transaction, as before.

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

# Rows per transaction while the store is contended: tens of milliseconds each at 1M IoCs here.
SLICE_ROWS = 2_000
# How long the store counts as contended after a request had to queue behind another.
CONTENDED_S = 5.0

_UNREAD: Any = object()  # the source's resume point, not read yet


class Job:
    """A request the store actor is serving: done in one step, or (a large ingest) one slice per step."""

    def __init__(self, request: Any, reply: Reply) -> None:
        self.request = request
        self.reply = reply
        self._at = 0  # rows of an ingest batch merged so far
        self._resume: Any = _UNREAD
        self._results: list[IngestResult] = []

    def step(self, conn: sqlite3.Connection, limit: int | None = None) -> tuple[bool, Any]:
        """Do the next step (worker thread): whether the request is done, and its result if so.

        ``limit``: merge at most this many rows of an ingest batch in this step (None: the rest).
        """
        batch = self.request
        if not isinstance(batch, IngestBatch) or (self._at == 0 and (limit is None or len(batch.rows) <= limit)):
            return True, engine.execute(conn, batch)
        if self._resume is _UNREAD:
            self._resume = sql.get_checkpoint(conn, batch.source).sub
        rows, start = batch.rows, self._at
        end = len(rows) if limit is None else min(len(rows), start + limit)
        last = end == len(rows)
        part = msgspec.structs.replace(
            batch,
            rows=rows[start:end],
            fresh=batch.fresh and start == 0,
            snapshot_end=batch.snapshot_end and last,
            sub=batch.sub if last else self._resume,
            cursor=batch.cursor if last else None,  # None: keep the stored one
            rejected=batch.rejected if last else (),
        )
        self._results.append(engine.execute(conn, part))
        self._at = end
        return (True, merged(self._results)) if last else (False, None)


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
