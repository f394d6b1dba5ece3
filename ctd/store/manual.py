"""Operator actions on indicators: a manual retraction and its hold, and lifting it (see ``holds``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ctd.store import changes, sql


def retract(conn: sqlite3.Connection, ids: Sequence[int], source: str | None, now: int, until: int | None) -> int:
    """Retract ``ids`` for ``source`` (None: every source) and hold them so; returns entries changed."""
    n = 0
    with sql.transaction(conn):
        sid = 0 if source is None else _source_id(conn, source)
        for iid in ids:
            n += conn.execute(
                "UPDATE sighting SET retracted = 1 WHERE iid = ? AND retracted = 0 AND (? = 0 OR sid = ?)",
                (iid, sid, sid),
            ).rowcount
            conn.execute(
                "INSERT INTO retraction_hold (iid, sid, at, until) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (iid, sid) DO UPDATE SET at = excluded.at, until = excluded.until",
                (iid, sid, now, until),
            )
        sql._refresh_ids(conn, ids, now)
        changes.bump_for(conn, ids)
    return n


def _source_id(conn: sqlite3.Connection, name: str) -> int:
    """The source's id inside an open transaction (a configured source may not have pulled yet)."""
    row = conn.execute("SELECT id FROM source WHERE name = ?", (name,)).fetchone()
    if row:
        return int(row[0])
    return int(conn.execute("INSERT INTO source(name) VALUES (?) RETURNING id", (name,)).fetchone()[0])


def unretract(conn: sqlite3.Connection, ids: Sequence[int], source: str | None) -> int:
    """Lift the holds on ``ids`` (of ``source`` only, or all of them); returns how many were lifted."""
    n = 0
    with sql.transaction(conn):
        for iid in ids:
            if source is None:
                n += conn.execute("DELETE FROM retraction_hold WHERE iid = ?", (iid,)).rowcount
            else:
                n += conn.execute(
                    "DELETE FROM retraction_hold WHERE iid = ? AND sid = (SELECT id FROM source WHERE name = ?)",
                    (iid, source),
                ).rowcount
    return n
