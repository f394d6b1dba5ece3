"""The counters `ctdctl status` reads (issue 11, finding 4): O(1) to read, always equal to a recount."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.model import Sighting
from ctd.rules.compiler import Rule
from ctd.store import PlanSharing, Selection, run_store, tally, to_stage_rows
from ctd.store import guard as store_guard
from ctd.store import ledger as store_ledger
from ctd.store import manual as store_manual
from ctd.store import query as store_query
from ctd.store import sql as store_sql
from ctd.store.schema import MIGRATIONS, migrate
from tests.storeutil import DAY, NOW, ingest, s


@pytest.fixture
def conn(tmp_path):
    c = store_sql.connect(str(tmp_path / "ctd.db"))
    yield c
    c.close()


def assert_counts_match(conn: sqlite3.Connection) -> None:
    assert tally.read(conn) == tally.recount(conn)


def plan(conn: sqlite3.Connection, name: str, filter_: str, now: int, incremental: bool = True) -> None:
    store_ledger.plan(
        conn,
        PlanSharing(
            sharing=name,
            selection=Selection(rule=Rule(filter_), at=now),
            size="text",
            overhead=1,
            max_entries=3,
            max_bytes=None,
            incremental=incremental,
            now=now,
        ),
    )


def test_counters_follow_every_kind_of_change(conn):
    """Ingest, re-reports, snapshot ends, expiry, retraction, allowlist, guard and ledger keep the counters exact."""
    ingest(conn, "a", [s("a.example"), s("b.example"), s("1.2.3.4", "ipv4"), s("a.example")])
    assert_counts_match(conn)
    ingest(conn, "b", [s("a.example", retracted=True), s("c.example")], aging_days=1)
    assert_counts_match(conn)
    ingest(conn, "a", [s("a.example")], fresh=True, snapshot_end=True, now=NOW + 10)  # b.example, 1.2.3.4 retracted
    assert_counts_match(conn)
    store_sql.expire(conn, NOW + 2 * DAY)
    assert_counts_match(conn)
    store_manual.retract(conn, store_query.find_ids(conn, [("domain", "c.example")]), None, NOW, None)
    assert_counts_match(conn)
    store_sql.reapply_allowlist(conn, lambda t, v: v == "a.example", NOW)
    assert_counts_match(conn)
    store_sql.reapply_allowlist(conn, lambda t, v: False, NOW)
    store_guard.apply_guard(conn, "a", "lists-v1", lambda t, v: "list" if v == "a.example" else None, False, NOW)
    assert_counts_match(conn)
    ingest(conn, "c", [s(f"h{i}.example") for i in range(6)])
    plan(conn, "to-x", "type = domain", NOW)
    assert_counts_match(conn)
    pending = store_ledger.fetch_pending(conn, "to-x", False, 10)
    store_ledger.record(
        conn, "to-x", done=[i for i, _ in pending[1:]], rejected={pending[0][0]: "no"}, retraction=False, now=NOW
    )
    assert_counts_match(conn)
    store_manual.retract(conn, store_query.find_ids(conn, [("domain", "h5.example")]), None, NOW, None)
    plan(conn, "to-x", "type = domain", NOW + 1)
    assert_counts_match(conn)
    plan(conn, "full", "type = domain", NOW, incremental=False)
    store_ledger.record_full(conn, "full", list_hash="h", rejected={}, now=NOW)
    assert_counts_match(conn)
    conn.execute("DELETE FROM delivery WHERE state = 'shared'")  # a future pruning (no code deletes yet)
    conn.execute("DELETE FROM sighting WHERE sid = 1")
    conn.execute("DELETE FROM indicator WHERE id NOT IN (SELECT iid FROM sighting)")
    assert_counts_match(conn)


def test_counts_read_only_the_counters(conn):
    """`counts` and `source_counts` read a few counter rows, not the indicator table (O(1) in the store's size)."""
    ingest(conn, "a", [s(f"h{i}.example") for i in range(500)])
    read: list[str] = []
    conn.set_trace_callback(read.append)
    assert store_query.counts(conn)["total"] == 500
    assert store_query.source_counts(conn) == {"a": 500}
    conn.set_trace_callback(None)
    assert read and all("count(" not in q.lower() for q in read), read
    assert all("tally" in q or "sharing" in q or "source" in q for q in read), read


def test_migration_counts_an_existing_store(tmp_path):
    """A store from before the counters gets them filled from its rows when it is migrated."""
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path, isolation_level=None)
    saved = MIGRATIONS[7:]
    del MIGRATIONS[7:]
    try:
        migrate(old)
    finally:
        MIGRATIONS.extend(saved)
    old.execute("INSERT INTO source (id, name) VALUES (1, 'a')")
    old.execute("INSERT INTO indicator (id, type, value, active) VALUES (1, 'domain', 'x.example', 1)")
    old.execute("INSERT INTO indicator (id, type, value, active) VALUES (2, 'url', 'http://y.example/', 0)")
    old.execute(
        "INSERT INTO sighting (iid, sid, reputation, severity, tags, comments, reference, gen) "
        "VALUES (1, 1, 5, 0, '[]', '', '', 1)"
    )
    old.close()
    conn = store_sql.connect(path)
    try:
        counts = tally.read(conn)
        assert counts == tally.recount(conn)
        assert counts.indicators["total"] == 2 and counts.sources == {"a": 1}
    finally:
        conn.close()


values = st.sampled_from([f"v{i}.example" for i in range(8)])
reports = st.lists(st.tuples(values, st.booleans()), max_size=6)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.sampled_from("abc"), reports, st.booleans()),
        st.tuples(st.just("expire"), st.integers(0, 3)),
        st.tuples(st.just("retract"), values, st.sampled_from([None, "a", "b"])),
        st.tuples(st.just("plan"), st.sampled_from(["type = domain", "value ~ 'v1*'", 'tags has "x"'])),
        st.tuples(st.just("deliver"), st.booleans()),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=steps)
def test_counters_equal_a_recount_after_any_sequence(tmp_path_factory, ops: list[Any]):
    """Whatever sequence of store operations runs, the counters equal a recount of the tables."""
    conn = store_sql.connect(str(tmp_path_factory.mktemp("c") / "ctd.db"))
    try:
        now = NOW
        for op in ops:
            now += 3600
            match op:
                case ("ingest", source, batch, end):
                    rows = [Sighting(type="domain", value=v, retracted=r) for v, r in batch]
                    ingest(conn, source, rows, now=now, aging_days=1, fresh=end, snapshot_end=end)
                case ("expire", days):
                    store_sql.expire(conn, now + days * DAY)
                case ("retract", value, source):
                    ids = store_query.find_ids(conn, [("domain", value)])
                    if ids:
                        store_manual.retract(conn, ids, source, now, None)
                case ("plan", filter_):
                    plan(conn, "x", filter_, now)
                case ("deliver", retraction):
                    batch_ = store_ledger.fetch_pending(conn, "x", retraction, 2)
                    store_ledger.record(
                        conn, "x", done=[i for i, _ in batch_], rejected={}, retraction=retraction, now=now
                    )
            assert_counts_match(conn)
    finally:
        conn.close()


async def test_status_counts_do_not_wait_behind_the_writer(tmp_path):
    """The store client answers counts from its snapshot while a long write holds the store's worker."""
    held, release = trio.Event(), trio.Event()
    token = trio.lowlevel.current_trio_token()

    def slow_allowlist(t: str, v: str) -> bool:
        trio.from_thread.run_sync(held.set, trio_token=token)
        trio.from_thread.run(release.wait, trio_token=token)
        return False

    async with trio.open_nursery() as nursery:
        store = await nursery.start(run_store, str(tmp_path / "ctd.db"))
        rows = to_stage_rows([s("x.example")], now=NOW, reputation=None, extra_tags=(), allowlisted=None)
        from ctd.store import IngestBatch

        await store.ingest(
            IngestBatch(
                source="a",
                rows=rows,
                policy="last_seen",
                aging_days=1,
                now=NOW,
                fresh=True,
                snapshot_end=False,
                sub=None,
                cursor=None,
            )
        )
        nursery.start_soon(store.reapply_allowlist, slow_allowlist, NOW)
        await held.wait()
        with trio.fail_after(5):  # a guard only: before, this waited until the write was released
            assert (await store.counts())["total"] == 1
            assert await store.source_counts() == {"a": 1}
        release.set()
        nursery.cancel_scope.cancel()
