"""A sharing of sources that report few of the store's indicators plans from their reports (issue 14: latency)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.rules.compiler import Rule
from ctd.store import PlanSharing, Selection
from ctd.store import ledger as store_ledger
from ctd.store import sql as store_sql
from tests.storeutil import DAY, NOW, ingest, s


@pytest.fixture
def conn(tmp_path):
    c = store_sql.connect(str(tmp_path / "ctd.db"))
    yield c
    c.close()


def _selection(sources: tuple[str, ...], at: int = NOW, rule: str = "type = domain") -> Selection:
    return Selection(rule=Rule(rule), at=at, types=("domain",), sources=sources, not_from="dest")


def _plan(name: str, sel: Selection, *, incremental: bool, now: int, max_entries: int | None = None) -> PlanSharing:
    return PlanSharing(
        sharing=name,
        selection=sel,
        size="text",
        overhead=1,
        max_entries=max_entries,
        max_bytes=None,
        incremental=incremental,
        now=now,
        expiry=incremental,
    )


def _query_plan(conn: sqlite3.Connection, sel: Selection, by_source: bool) -> str:
    where, params = store_ledger.selection_where(sel, 1, by_source)
    rows = conn.execute(f"EXPLAIN QUERY PLAN SELECT i.id FROM indicator i WHERE {where}", params).fetchall()
    return "\n".join(r[3] for r in rows)


def test_a_few_reports_are_read_by_source_not_by_scanning_every_indicator(conn):
    """Planning a sharing of a small source reads that source's reports through their index."""
    ingest(conn, "big", [s(f"b{i}.example") for i in range(40)])
    ingest(conn, "small", [s("x.example"), s("y.example")])
    assert store_ledger.few_reports(conn, ("small",))
    assert not store_ledger.few_reports(conn, ("big",))
    assert not store_ledger.few_reports(conn, ("big", "small"))
    plan = _query_plan(conn, _selection(("small",)), True)
    assert "sighting_by_source" in plan and "SCAN i" not in plan, plan
    assert "sighting_by_source" not in _query_plan(conn, _selection(("big",)), False)


def test_a_new_indicators_report_is_merged_from_the_stage_not_from_the_source_index(conn):
    """An ingest's single-source merge walks the staged rows: the source index must not drive it (a nested scan)."""
    rows = conn.execute("EXPLAIN QUERY PLAN " + store_sql._SINGLE_SOURCE_SQL, {"sid": 1, "now": NOW, "max_id": 1})
    assert rows.fetchone()[3] == "SCAN st"


def _ledger(conn: sqlite3.Connection, name: str) -> list[tuple]:
    shid = store_ledger.sharing_id(conn, name)
    return conn.execute(
        "SELECT iid, state, fp, error, staged, expires_at FROM delivery WHERE shid = ? ORDER BY iid", (shid,)
    ).fetchall()


def _listed(conn: sqlite3.Connection, name: str) -> list[tuple]:
    shid = store_ledger.sharing_id(conn, name)
    return conn.execute(f"SELECT pos, iid, fp FROM temp.{store_ledger.LIST_TABLE.format(shid)} ORDER BY pos").fetchall()


def _deliver_incremental(conn: sqlite3.Connection, name: str, now: int) -> None:
    for retraction in (True, False):
        while batch := store_ledger.fetch_pending(conn, name, retraction, 3):
            done = [iid for iid, _ in batch]
            expires = {iid: it.expires_at for iid, it in batch}
            store_ledger.record(conn, name, done=done, rejected={}, retraction=retraction, now=now, expires=expires)


_step = st.tuples(
    st.sampled_from(["a", "b", "dest", "big"]),
    st.lists(st.tuples(st.integers(0, 14), st.booleans()), max_size=8),  # (value, retracted)
    st.booleans(),  # snapshot end
    st.integers(0, 40),  # days later
    st.booleans(),  # expire
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(_step, min_size=1, max_size=8),
    sources=st.sampled_from([("a",), ("a", "b"), ("b", "dest")]),
    max_entries=st.sampled_from([None, 3]),
)
def test_planning_by_source_and_by_scan_bring_the_ledger_to_the_same_state(
    tmp_path_factory, monkeypatch, history, sources, max_entries
):
    """On any history, a sharing planned from its sources' reports ends with the same plans, lists and ledger."""
    conn = store_sql.connect(str(tmp_path_factory.mktemp("paths") / "ctd.db"))
    try:
        ingest(conn, "big", [s(f"big{i}.example") for i in range(12)], aging_days=400)
        now = NOW
        for n, (source, reports, end, days, expire) in enumerate(history):
            now += days * DAY
            values = [s(f"v{v}.example", retracted=r) for v, r in reports]
            ingest(conn, source, values, now=now, aging_days=30, fresh=True, snapshot_end=end, sub={"n": n})
            if expire:
                store_sql.expire(conn, now)
            sel = _selection(sources, now)
            for incremental in (True, False):
                kind = "inc" if incremental else "full"
                outcomes = []
                for by_source in (True, False):
                    monkeypatch.setattr(store_ledger, "few_reports", lambda c, s, b=by_source: b)
                    name = f"{kind}-{'src' if by_source else 'scan'}"
                    plan = store_ledger.plan(
                        conn, _plan(name, sel, incremental=incremental, now=now, max_entries=max_entries)
                    )
                    if incremental:
                        _deliver_incremental(conn, name, now)
                        outcomes.append((plan, _ledger(conn, name)))
                    else:
                        listed = _listed(conn, name)
                        store_ledger.record_full(conn, name, list_hash=str(listed), rejected={}, now=now)
                        outcomes.append((plan, listed, _ledger(conn, name)))
                assert outcomes[0] == outcomes[1]
    finally:
        conn.close()
