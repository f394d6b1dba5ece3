"""The bulk ingest (ctd.store.sql.ingest) leaves exactly the store the reference ingest leaves.

tests/ingest_reference.py is the ingest as it was before the bulk re-report path
(lookup first, ids from the batch, value-ordered staging, provenance from
best_source). Random batches from several sources (new values, re-reports with
the same or changed fields, duplicates inside a batch, retractions, allowlist and
warning-list flags, snapshots, manual retraction holds, expiry sweeps) go through
both; every indicator, every provenance row, the counters and each batch's
result must be equal.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.store import IngestBatch, tally
from ctd.store import manual as store_manual
from ctd.store import sql as store_sql
from ctd.store.rows import StageRow
from tests import ingest_reference
from tests.storeutil import DAY, NOW

VALUES = [("domain", f"v{i}.example") for i in range(8)] + [("ipv4", "10.0.0.1"), ("md5", "0" * 32)]
SOURCES = ["a", "b", "c"]

_row = st.tuples(
    st.sampled_from(VALUES),
    st.integers(0, 3),  # first_seen / last_seen offset (days back)
    st.integers(1, 10),  # reputation
    st.integers(0, 4),  # severity rank
    st.sampled_from(["[]", '["x"]', '["x","y"]', '["y"]']),
    st.sampled_from(["", "note"]),
    st.sampled_from([None, None, None, 1, 40]),  # the feed's own expiry (days ahead)
    st.booleans(),  # retracted (rarely)
    st.integers(0, 9),  # allowlisted when 0
    st.sampled_from(["", "", "", "list1"]),  # warning list hit
    st.booleans(),  # its hold
)

_op = st.one_of(
    st.tuples(
        st.just("ingest"),
        st.sampled_from(SOURCES),
        st.lists(_row, max_size=12),
        st.sampled_from(["last_seen", "first_seen", "highest_severity"]),
        st.sampled_from([0, 1, 90]),  # aging days
        st.booleans(),  # fresh
        st.booleans(),  # snapshot_end
    ),
    st.tuples(st.just("retract"), st.sampled_from(VALUES), st.sampled_from([None, *SOURCES])),
    st.tuples(st.just("expire")),
)


def _stage_row(now: int, r: tuple) -> StageRow:
    (typ, value), back, rep, sev, tags, comments, exp, retracted, allow, wl, hold = r
    seen = now - back * DAY
    return (
        typ,
        value,
        seen - DAY,
        seen,
        rep,
        sev,
        tags,
        comments,
        "",
        None if exp is None else now + exp * DAY,
        1 if retracted and back == 3 else 0,
        1 if allow == 0 else 0,
        wl,
        1 if wl and hold else 0,
    )


def _state(conn: sqlite3.Connection) -> dict[str, Any]:
    """Everything ingest writes, keyed by value rather than by id (ids may differ between paths)."""
    ind = conn.execute(
        "SELECT i.type, i.value, i.active, i.allowlisted, i.first_seen, i.last_seen, i.expires_at, i.reputation, "
        "i.severity, i.tags, i.comments, i.reference, src.name, i.hits, i.changed_at, i.nsrc, i.warninglist "
        "FROM indicator i LEFT JOIN source src ON src.id = i.best_source ORDER BY i.type, i.value"
    ).fetchall()
    sig = conn.execute(
        "SELECT i.type, i.value, src.name, s.first_seen, s.last_seen, s.reputation, s.severity, s.tags, s.comments, "
        "s.reference, s.expires_at, s.retracted, s.gen, s.warninglist, s.wl_hold "
        "FROM sighting s JOIN indicator i ON i.id = s.iid JOIN source src ON src.id = s.sid ORDER BY 1, 2, 3"
    ).fetchall()
    sources = conn.execute("SELECT name, gen FROM source ORDER BY name").fetchall()
    return {"indicators": ind, "sightings": sig, "sources": sources, "counts": tally.read(conn)}


def _ids(conn: sqlite3.Connection, typ: str, value: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM indicator WHERE type = ? AND value = ?", (typ, value))]


@pytest.fixture
def stores(tmp_path):
    fast = store_sql.connect(str(tmp_path / "fast.db"))
    ref = store_sql.connect(str(tmp_path / "ref.db"))
    yield fast, ref
    fast.close()
    ref.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=14))
def test_bulk_ingest_leaves_the_same_store_as_the_reference(stores, ops):
    """Random batches, re-reports, holds and expiry: the bulk ingest and the reference ingest agree on everything."""
    fast, ref = stores
    for conn in stores:
        for table in ("sighting", "indicator", "source", "retraction_hold", "rejection"):
            conn.execute(f"DELETE FROM {table}")
        for table in ("tally_indicator", "tally_source", "tally_delivery"):
            conn.execute(f"DELETE FROM {table}")
    now = NOW
    for op in ops:
        now += 3600
        if op[0] == "ingest":
            _, source, rows, policy, aging, fresh, end = op
            batch = IngestBatch(
                source=source,
                rows=[_stage_row(now, r) for r in rows],
                policy=policy,
                aging_days=aging,
                now=now,
                fresh=fresh,
                snapshot_end=end,
                sub=None,
                cursor=None,
            )
            assert store_sql.ingest(fast, batch) == ingest_reference.ingest(ref, batch)
        elif op[0] == "retract":
            _, (typ, value), source = op
            for conn in stores:
                store_manual.retract(conn, _ids(conn, typ, value), source, now, None)
        else:
            for conn in stores:
                store_sql.expire(conn, now + 2 * DAY)
        assert _state(fast) == _state(ref)
    assert tally.read(fast) == tally.recount(fast)


def test_ids_follow_the_order_values_were_reported(stores):
    """New indicators are numbered in the order the batch reported them, not in the order staging sorts them."""
    fast, _ = stores
    values = ["zz.example", "aa.example", "mm.example", "aa.example"]
    rows = [_stage_row(NOW, (("domain", v), 0, 5, 0, "[]", "", None, False, 1, "", False)) for v in values]
    batch = IngestBatch(
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
    assert store_sql.ingest(fast, batch).new == 3
    got = [v for (v,) in fast.execute("SELECT value FROM indicator ORDER BY id")]
    assert got == ["zz.example", "aa.example", "mm.example"]
    assert fast.execute("SELECT hits FROM indicator WHERE value = 'aa.example'").fetchone()[0] == 2
