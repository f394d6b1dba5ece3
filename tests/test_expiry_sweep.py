"""The expiry sweep in steps (issue 14): the same result as one sweep, and the store free between steps."""

from __future__ import annotations

import random
import sqlite3

import pytest
import trio
import trio.testing

from ctd.store import run_store, tally
from ctd.store import sql as store_sql
from tests.storeutil import DAY, NOW, ingest, s

ONE_SHOT = (
    "UPDATE indicator SET active = 0, changed_at = :now "
    "WHERE active = 1 AND expires_at IS NOT NULL AND expires_at <= :now"
)


def _seed(conn: sqlite3.Connection, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for b in range(0, n, 50):
        ingest(
            conn,
            rng.choice("abc"),
            [s(f"h{i}.example") for i in range(b, min(n, b + 50))],
            aging_days=rng.choice([0, 1, 2, 3]),
            now=NOW + rng.randrange(3 * DAY),
        )


def _state(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT type, value, active, changed_at FROM indicator ORDER BY type, value").fetchall()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sweep_in_steps_expires_exactly_what_one_sweep_expires(tmp_path, monkeypatch, seed):
    """Chunk by chunk, one chunk per step, the sweep leaves the store and its counters as one UPDATE does."""
    monkeypatch.setattr(store_sql, "EXPIRE_CHUNK", 37)
    stepped = store_sql.connect(str(tmp_path / "stepped.db"))
    whole = store_sql.connect(str(tmp_path / "whole.db"))
    for conn in (stepped, whole):
        _seed(conn, 400, seed)
    at = NOW + 3 * DAY
    n = store_sql.expire(stepped, at, budget_s=0)
    with store_sql.transaction(whole):
        expected = whole.execute(ONE_SHOT, {"now": at}).rowcount
    assert n == expected and n > 0
    assert _state(stepped) == _state(whole)
    assert tally.read(stepped) == tally.recount(stepped)


def test_a_step_covers_one_chunk_when_its_budget_is_spent(tmp_path, monkeypatch):
    """With no time left a step stops after one chunk and says where to resume; the last one says it is done."""
    monkeypatch.setattr(store_sql, "EXPIRE_CHUNK", 100)
    conn = store_sql.connect(str(tmp_path / "ctd.db"))
    _seed(conn, 250, 4)
    top = conn.execute("SELECT max(id) FROM indicator").fetchone()[0]
    resumes = []
    after: int | None = 0
    while after is not None:
        step = store_sql.expire_step(conn, NOW + 9 * DAY, after, budget_s=0)
        resumes.append(step.resume)
        after = step.resume
    assert resumes == [*range(100, top, 100), None]


async def test_the_store_serves_other_requests_between_steps(tmp_path, monkeypatch):
    """Store.expire sends one request per step, so a request queued meanwhile waits for one step, not the sweep."""
    monkeypatch.setattr(store_sql, "EXPIRE_CHUNK", 50)
    monkeypatch.setattr(store_sql, "EXPIRE_BUDGET_S", 0)
    path = str(tmp_path / "ctd.db")
    conn = store_sql.connect(path)
    _seed(conn, 300, 5)
    top = conn.execute("SELECT max(id) FROM indicator").fetchone()[0]
    conn.close()
    async with trio.open_nursery() as nursery:
        store = await nursery.start(run_store, path)
        before = store.statistics().handled
        served: list[str] = []

        async def sweep() -> None:
            served.append(f"expired {await store.expire(NOW + 9 * DAY)}")

        async def query() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the sweep's first step is in the store
            await store.checkpoint("a")
            served.append("checkpoint")

        async with trio.open_nursery() as both:
            both.start_soon(sweep)
            both.start_soon(query)
        assert served[0] == "checkpoint" and served[1].startswith("expired ")
        assert store.statistics().handled - before == -(-top // 50) + 1  # the steps and the query
        nursery.cancel_scope.cancel()
