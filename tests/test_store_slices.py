"""A large ingest batch is merged in slices, and the store serves other requests between them (issue 14)."""

from __future__ import annotations

import sqlite3

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.model import Sighting
from ctd.store import IngestBatch, run_store, to_stage_rows
from ctd.store import slices as store_slices
from ctd.store import sql as store_sql
from ctd.store.slices import Job
from tests.storeutil import NOW


def _batch(source: str, values: list[str], **kw: object) -> IngestBatch:
    rows = to_stage_rows(
        [Sighting(type="domain", value=v) for v in values], now=NOW, reputation=None, extra_tags=(), allowlisted=None
    )
    args: dict = dict(
        source=source,
        rows=rows,
        policy="last_seen",
        aging_days=30,
        now=NOW,
        fresh=True,
        snapshot_end=False,
        sub=None,
        cursor=None,
    )
    args.update(kw)
    return IngestBatch(**args)


def _sliced(conn: sqlite3.Connection, batch: IngestBatch, limit: int) -> object:
    """Merge ``batch`` as the store actor does while contended: ``limit`` rows per step; its result."""
    job = Job(batch, None)  # type: ignore[arg-type]
    while True:
        done, result = job.step(conn, limit)
        if done:
            return result


async def _contend(store) -> None:
    """Two requests at once: one of them queues behind the other."""
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(store.change_marks, None)


async def test_a_request_is_served_between_the_slices_of_a_large_batch(tmp_path, monkeypatch):
    """While the store is contended, a request sent during a large batch is answered before the batch is."""
    monkeypatch.setattr(store_slices, "SLICE_ROWS", 1)
    order: list[str] = []
    ingested = trio.Event()
    async with trio.open_nursery() as nursery:
        store = await nursery.start(run_store, str(tmp_path / "ctd.db"))
        await _contend(store)

        async def ingest() -> None:
            await store.ingest(_batch("bulk", [f"v{i}.example" for i in range(300)]))
            order.append("ingest")
            ingested.set()

        nursery.start_soon(ingest)
        await trio.testing.wait_all_tasks_blocked()  # the store is merging the batch's first slice
        await store.change_marks(None)
        order.append("marks")
        await ingested.wait()
        nursery.cancel_scope.cancel()
    assert order == ["marks", "ingest"]


async def test_a_store_with_nothing_else_to_do_merges_a_batch_in_one_transaction(tmp_path, monkeypatch):
    """With no request queuing behind another, a large batch is merged whole (slices cost ingest speed)."""
    monkeypatch.setattr(store_slices, "SLICE_ROWS", 2)
    merges: list[int] = []
    execute = store_slices.engine.execute

    def spy(conn, request):
        if isinstance(request, IngestBatch):
            merges.append(len(request.rows))
        return execute(conn, request)

    monkeypatch.setattr(store_slices.engine, "execute", spy)
    async with trio.open_nursery() as nursery:
        store = await nursery.start(run_store, str(tmp_path / "ctd.db"))
        await store.ingest(_batch("bulk", [f"v{i}.example" for i in range(10)]))
        await _contend(store)
        await store.ingest(_batch("bulk", [f"w{i}.example" for i in range(5)], fresh=False))
        nursery.cancel_scope.cancel()
    assert merges == [10, 2, 2, 1]


def test_only_the_last_slice_moves_the_resume_point(tmp_path):
    """Until a sliced batch's last slice commits, the source resumes where it did before the batch."""
    conn = store_sql.connect(str(tmp_path / "ctd.db"))
    store_sql.ingest(conn, _batch("a", ["first.example"], sub={"page": 1}, cursor={"c": 1}))
    batch = _batch("a", [f"v{i}.example" for i in range(5)], fresh=False, sub={"page": 2}, cursor={"c": 2})
    job = Job(batch, None)  # type: ignore[arg-type]
    done, _ = job.step(conn, 2)
    assert not done
    cp = store_sql.get_checkpoint(conn, "a")
    assert (cp.sub, cp.cursor) == ({"page": 1}, {"c": 1})
    while not done:
        done, result = job.step(conn, 2)
    cp = store_sql.get_checkpoint(conn, "a")
    assert (cp.sub, cp.cursor) == ({"page": 2}, {"c": 2})
    assert (result.new, result.updated) == (5, 0)


def _dump(conn: sqlite3.Connection) -> dict[str, list]:
    # Indicators are named by (type, value), not id: a whole batch numbers new values by their place in
    # the batch (a value repeated in it leaves a gap), a slice by its place in the slice; the order holds.
    names = {iid: (typ, value) for iid, typ, value in conn.execute("SELECT id, type, value FROM indicator")}
    cur = conn.execute("SELECT * FROM sighting")
    iid_at = [d[0] for d in cur.description].index("iid")
    sightings = sorted((names[row[iid_at]], row[:iid_at] + row[iid_at + 1 :]) for row in cur.fetchall())
    return {
        # Not hits: a value repeated within one batch counts once per batch when it was stored before
        # (ctd.store.sql), so a repeat that lands in the next slice counts once more.
        "indicator": conn.execute(
            "SELECT type, value, active, allowlisted, first_seen, last_seen, expires_at, reputation, severity, "
            "tags, comments, reference, best_source, changed_at, nsrc, warninglist FROM indicator ORDER BY id"
        ).fetchall(),
        "sighting": sightings,
        # changes: a slice moves the generations too (more often, never less)
        "source": conn.execute("SELECT name, gen, cursor, sub, last_error FROM source ORDER BY name").fetchall(),
        # a count that went back to 0 may stay as a row
        "tally_indicator": conn.execute("SELECT * FROM tally_indicator WHERE n != 0 ORDER BY type, active").fetchall(),
        "tally_source": conn.execute("SELECT * FROM tally_source WHERE n != 0 ORDER BY sid").fetchall(),
        "rejected": conn.execute("SELECT * FROM rejection ORDER BY 1, 2, 3").fetchall(),
    }


_report = st.tuples(
    st.integers(0, 12),  # value
    st.integers(0, 100),  # reputation
    st.sampled_from(["unknown", "low", "high"]),
    st.booleans(),  # retracted
    st.sampled_from([(), ("a",), ("b", "c")]),
)
_batches = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.lists(_report, max_size=9),
        st.booleans(),  # fresh
        st.booleans(),  # snapshot_end
        st.integers(0, 3),  # days later
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_batches)
def test_a_sliced_batch_stores_what_one_transaction_would(tmp_path_factory, history):
    """Any history of batches merged in slices of 2 leaves the store as merging each in one transaction does."""
    d = tmp_path_factory.mktemp("slices")
    whole, parts = store_sql.connect(str(d / "whole.db")), store_sql.connect(str(d / "parts.db"))
    try:
        for n, (source, reports, fresh, end, days) in enumerate(history):
            sightings = [
                Sighting(type="domain", value=f"v{v}.example", reputation=rep, severity=sev, retracted=ret, tags=tags)
                for v, rep, sev, ret, tags in reports
            ]
            now = NOW + days * 86400
            rows = to_stage_rows(sightings, now=now, reputation=None, extra_tags=(), allowlisted=None)
            batch = IngestBatch(
                source=source,
                rows=rows,
                policy="last_seen",
                aging_days=2,
                now=now,
                fresh=fresh,
                snapshot_end=end,
                sub=None if end else {"n": n},
                cursor={"n": n},
                rejected=(("malformed", f"line {n}", "bad"),),
            )
            one = store_sql.ingest(whole, batch)
            sliced = _sliced(parts, batch, 2)
            assert sliced == one
            assert _dump(parts) == _dump(whole)
    finally:
        whole.close()
        parts.close()
