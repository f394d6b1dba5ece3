"""Operator retractions that a source's next report does not undo (schema version 8).

``ctdctl indicators retract VALUE [--source S] [--until WHEN]`` retracts the
value's provenance entries (of S, or of every source) and records a hold:
``retraction_hold(iid, sid, at, until)``, ``sid = 0`` for every source. While
a hold stands, ingest turns the held value's re-reports into retracted entries
(:func:`apply`, one cheap query per batch when no hold exists) and says how
many it kept, so the source actor can log them. ``unretract`` lifts holds; the
value counts again from each source's next report. A hold past its ``until``
no longer applies. The operator commands themselves are in ``ctd/store/manual.py``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

from ctd.model import iso

EXAMPLES: Final = 5  # values named in a log line about kept retractions

_APPLY_SQL = """
UPDATE stage SET retracted = 1
WHERE retracted = 0 AND iid IN (
    SELECT iid FROM retraction_hold WHERE sid IN (0, :sid) AND (until IS NULL OR until > :now))
RETURNING coalesce(pos, seq), type, value
"""


def apply(conn: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    """Inside an ingest, after stage.iid is set: held re-reports become retractions. (count, examples)."""
    if conn.execute("SELECT 1 FROM retraction_hold LIMIT 1").fetchone() is None:
        return 0, ()
    rows = sorted(conn.execute(_APPLY_SQL, params).fetchall())  # in the batch's order (staging sorts by value)
    return len(rows), tuple(f"{t}:{v}" for _, t, v in rows[:EXAMPLES])


def for_indicator(conn: sqlite3.Connection, iid: int) -> list[dict[str, Any]]:
    """The holds standing on one indicator, for ``indicators show``."""
    now = int(time.time())
    return [
        {"source": name, "since": iso(at), "until": iso(until)}
        for name, at, until in conn.execute(
            "SELECT src.name, h.at, h.until FROM retraction_hold h LEFT JOIN source src ON src.id = h.sid "
            "WHERE h.iid = ? AND (h.until IS NULL OR h.until > ?) ORDER BY h.sid",
            (iid, now),
        )
    ]
