"""Change generations: what lets a sharing pass with nothing to do skip planning (issue 14).

A sharing selects active indicators live from its sources. What it selects,
and the metadata it sends, can change only in a transaction that touches
those indicators or their reports: an ingest (of its sources, or of another
source reporting the same indicator: activity and effective metadata are
over all sources), a snapshot's retractions, the expiry sweep, an operator's
retraction, an allowlist or warning-list guard re-evaluation, plugin values
re-applied. Each of these moves ``source.changes`` of every source whose
indicators it may have touched, in the same transaction. A sharing pass reads
the generations of the sources it depends on (one small read) and, when none
moved since its last successful pass (and nothing else it depends on did:
mutes, the clock for rules that use ``now``, the destination's copy), does not
plan at all.

Over-approximating is safe (a spurious pass plans and finds nothing to do);
missing a change is not, so an operation that cannot tell cheaply which
sources it touched moves them all (``bump_all``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# Above this many indicators, move every source instead of looking up whose they are.
_LOOKUP_MAX = 10_000


def bump_all(conn: sqlite3.Connection) -> None:
    """Every source moved (inside the caller's transaction)."""
    conn.execute("UPDATE source SET changes = changes + 1")


def bump_for(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """The sources reporting any of ``ids`` moved (inside the caller's transaction)."""
    if not ids:
        return
    if len(ids) > _LOOKUP_MAX:
        bump_all(conn)
        return
    marks = ",".join("?" * len(ids))
    conn.execute(
        f"UPDATE source SET changes = changes + 1 WHERE id IN (SELECT sid FROM sighting WHERE iid IN ({marks}))",
        list(ids),
    )


def after_ingest(conn: sqlite3.Connection, sid: int, retracted: Sequence[int]) -> None:
    """An ingest batch of source ``sid`` was merged (inside its transaction).

    ``sid`` moved; so did every other source reporting an indicator of the batch
    (the staged rows the merge marked ``multi``), and the sources of what the
    snapshot's end retracted.
    """
    conn.execute(
        "UPDATE source SET changes = changes + 1 WHERE id = ? OR id IN "
        "(SELECT s.sid FROM stage st JOIN sighting s ON s.iid = st.iid WHERE st.multi)",
        (sid,),
    )
    bump_for(conn, retracted)


def marks(conn: sqlite3.Connection, sources: Sequence[str] | None) -> tuple[tuple[str, int], ...]:
    """The generations of ``sources`` (None: of every source), by name; a source never seen is 0."""
    if sources is None:
        rows = conn.execute("SELECT name, changes FROM source ORDER BY name").fetchall()
        return tuple((str(n), int(c)) for n, c in rows)
    found = dict(
        conn.execute(
            f"SELECT name, changes FROM source WHERE name IN ({','.join('?' * len(sources))})", list(sources)
        ).fetchall()
    )
    return tuple((name, int(found.get(name, 0))) for name in sorted(set(sources)))
