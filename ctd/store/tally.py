"""The counts an operator polls, read from the counters the schema's triggers keep (migration 9).

``read`` costs a few dozen rows whatever the store holds: the store actor
takes a snapshot with it after every request that changed something (in the
same worker call), and the ``StoreClient`` answers ``counts``,
``source_counts`` and ``ledger_counts`` from that snapshot without queueing
behind ingest. ``recount`` is the same figures the slow way (a scan of every
table), for ``ctdctl db check`` and the tests that keep the two equal.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

LEDGER_STATES = ("pending", "shared", "failed", "retract_pending", "retracted", "unshared")


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    """One consistent snapshot: indicators by type and state, live reports per source, ledgers per sharing."""

    indicators: dict[str, Any]  # {"total", "active", "by_type": {type: {"active", "inactive"}}}
    sources: dict[str, int]  # source name -> unretracted reports
    ledgers: dict[
        str, dict[str, Any]
    ]  # sharing name -> {"counts", "last_run", "last_success", "last_error", "apply_pending"}


def _indicators(rows: list[tuple[str, int, int]]) -> dict[str, Any]:
    by_type: dict[str, dict[str, int]] = {}
    total = active = 0
    for typ, act, n in rows:
        if not n:
            continue
        entry = by_type.setdefault(typ, {"active": 0, "inactive": 0})
        entry["active" if act else "inactive"] += n
        total += n
        active += n if act else 0
    return {"total": total, "active": active, "by_type": by_type}


def _ledgers(conn: sqlite3.Connection, rows: list[tuple[int, str, int]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names: dict[int, str] = {}
    for shid, name, last_run, last_success, last_error, apply_pending in conn.execute(
        "SELECT id, name, last_run, last_success, last_error, apply_pending FROM sharing"
    ):
        names[shid] = name
        out[name] = {
            "counts": dict.fromkeys(LEDGER_STATES, 0),
            "last_run": last_run,
            "last_success": last_success,
            "last_error": last_error,
            "apply_pending": bool(apply_pending),
        }
    for shid, state, n in rows:
        if shid in names:
            counts = out[names[shid]]["counts"]
            counts[state] = counts.get(state, 0) + n
    return out


def read(conn: sqlite3.Connection) -> Counts:
    """The counts from the maintained counters: O(types + sources + sharings x states)."""
    return Counts(
        indicators=_indicators(conn.execute("SELECT type, active, n FROM tally_indicator").fetchall()),
        sources=dict(
            conn.execute(
                "SELECT src.name, coalesce(t.n, 0) FROM source src LEFT JOIN tally_source t ON t.sid = src.id"
            ).fetchall()
        ),
        ledgers=_ledgers(conn, conn.execute("SELECT shid, state, n FROM tally_delivery").fetchall()),
    )


def recount(conn: sqlite3.Connection) -> Counts:
    """The same counts by scanning the tables (O(n)): what the counters must equal."""
    return Counts(
        indicators=_indicators(
            conn.execute("SELECT type, active, count(*) FROM indicator GROUP BY type, active").fetchall()
        ),
        sources=dict(
            conn.execute(
                "SELECT src.name, count(s.iid) FROM source src "
                "LEFT JOIN sighting s ON s.sid = src.id AND s.retracted = 0 GROUP BY src.name"
            ).fetchall()
        ),
        ledgers=_ledgers(
            conn, conn.execute("SELECT shid, state, count(*) FROM delivery GROUP BY shid, state").fetchall()
        ),
    )


def ledger(counts: Counts, name: str) -> dict[str, Any]:
    """``ledger_counts`` of one sharing from a snapshot (zeros for one that never ran)."""
    found = counts.ledgers.get(name)
    if found is None:
        return {
            "counts": dict.fromkeys(LEDGER_STATES, 0),
            "last_run": None,
            "last_success": None,
            "last_error": None,
            "apply_pending": False,
        }
    return {**found, "counts": dict(found["counts"])}
