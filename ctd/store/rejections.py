"""What each source rejected: the last ``KEEP_REJECTED`` records per source and reason class.

Kept in the store, written by the ingest transaction of the batch they came
with, so what ``ctdctl sources show`` lists survives a restart and is there
after ``ctd run --once`` too, and it never disagrees with what was committed.
The table is bounded (``KEEP_REJECTED`` rows per source and class, the oldest
dropped), so a feed that turns into garbage costs at most that many rows; the
source actor trims a batch's list before it crosses the seam.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ctd.model import REJECT_KINDS, iso
from ctd.store.requests import KEEP_REJECTED, RejectedRow


def keep(conn: sqlite3.Connection, sid: int, rows: Sequence[RejectedRow], at: int) -> None:
    """Add ``rows`` (kind, where, reason) for source ``sid``; drop what falls out of each class's window."""
    if not rows:
        return
    seq = conn.execute("SELECT coalesce(max(seq), 0) FROM rejection WHERE sid = ?", (sid,)).fetchone()[0]
    conn.executemany(
        "INSERT INTO rejection (sid, kind, seq, at, place, reason) VALUES (?, ?, ?, ?, ?, ?)",
        [(sid, kind, seq + i, at, where, reason) for i, (kind, where, reason) in enumerate(rows, 1)],
    )
    for kind in {r[0] for r in rows}:
        conn.execute(
            "DELETE FROM rejection WHERE sid = :sid AND kind = :kind AND seq <= (SELECT seq FROM rejection "
            "WHERE sid = :sid AND kind = :kind ORDER BY seq DESC LIMIT 1 OFFSET :keep)",
            {"sid": sid, "kind": kind, "keep": KEEP_REJECTED},
        )


def listing(conn: sqlite3.Connection, source: str) -> dict[str, list[dict[str, Any]]]:
    """The kept records of ``source`` by reason class, newest first (every class present, maybe empty)."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in REJECT_KINDS}
    for kind, at, where, reason in conn.execute(
        "SELECT r.kind, r.at, r.place, r.reason FROM rejection r JOIN source s ON s.id = r.sid "
        "WHERE s.name = ? ORDER BY r.seq DESC",
        (source,),
    ):
        out.setdefault(kind, []).append({"at": iso(at), "where": where, "reason": reason})
    return out
