"""The store's ingest as it was before the bulk re-report path (schema 12, commit ca5923c): a reference.

Frozen on purpose: tests/test_ingest_paths.py feeds random batches through this and through
``ctd.store.sql.ingest`` into two stores and requires the same state, so an optimisation of the
real path cannot change what ingest means. Do not edit it to follow the real path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from ctd.store import holds, rejections
from ctd.store.requests import IngestBatch, IngestResult
from ctd.store.rows import STAGE_COLUMNS
from ctd.store.sql import _json_enc, source_id, transaction

_COLUMNS = ", ".join(STAGE_COLUMNS)


def _stage(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    for row in rows:
        conn.execute(f"INSERT INTO stage ({_COLUMNS}) VALUES ({','.join('?' * len(STAGE_COLUMNS))})", row)


_RECONCILE = {
    # Which re-report of the same source replaces that source's metadata.
    "last_seen": "excluded.last_seen >= sighting.last_seen",
    "first_seen": "0",
    "highest_severity": (
        "excluded.severity > sighting.severity OR "
        "(excluded.severity = sighting.severity AND excluded.last_seen >= sighting.last_seen)"
    ),
}


def _upsert_sighting_sql(policy: str) -> str:
    """The provenance upsert. Aging counts from this report to ctd: a source entry expires at the
    batch's ``now`` plus ``aging_days`` unless the source gave its own expiry, and the latest report
    sets it (a re-report extends it, whatever the feed's own last_seen says, which stays metadata)."""
    take = _RECONCILE[policy]
    meta = ", ".join(
        f"{c} = CASE WHEN {take} THEN excluded.{c} ELSE sighting.{c} END"
        for c in ("reputation", "severity", "tags", "comments", "reference")
    )
    return f"""
    INSERT INTO sighting (iid, sid, first_seen, last_seen, reputation, severity, tags,
                          comments, reference, expires_at, retracted, gen, warninglist, wl_hold)
    SELECT iid, :sid, first_seen, last_seen, reputation, severity, tags, comments, reference,
           coalesce(expires_at, CASE WHEN :aging > 0 THEN :now + :aging END),
           retracted, :gen, warninglist, wl_hold
    FROM stage WHERE true
    ON CONFLICT (iid, sid) DO UPDATE SET
        {meta},
        first_seen = min(coalesce(sighting.first_seen, excluded.first_seen), excluded.first_seen),
        last_seen = max(coalesce(sighting.last_seen, excluded.last_seen), excluded.last_seen),
        expires_at = excluded.expires_at,
        retracted = excluded.retracted,
        gen = excluded.gen,
        warninglist = excluded.warninglist,
        wl_hold = excluded.wl_hold
    """


# Effective metadata: the best live source (highest reputation, then latest
# last_seen, then lowest source id for a total order), so the result does not
# depend on arrival order. Tags: the union over live sources, so a rule on a
# tag sees what any source said. Activity: any unretracted, unexpired entry
# not held by its source's warning-list guard (wl_hold); the expiry is taken
# from those entries, or from every unretracted one when the guard holds them
# all. The warning list shown is the first by name among the entries' hits.
_REFRESH_SQL = """
UPDATE indicator SET
    (reputation, severity, comments, reference, best_source) = (
        SELECT s.reputation, s.severity, s.comments, s.reference, s.sid
        FROM sighting s WHERE s.iid = indicator.id
        ORDER BY s.retracted, s.reputation DESC, s.last_seen DESC, s.sid
        LIMIT 1),
    tags = (
        SELECT CASE WHEN count(*) = 1 THEN CASE WHEN max(s.retracted) THEN '[]' ELSE max(s.tags) END
            ELSE (SELECT coalesce(json_group_array(v), '[]') FROM (
                    SELECT DISTINCT j.value AS v FROM sighting s2, json_each(s2.tags) j
                    WHERE s2.iid = indicator.id AND s2.retracted = 0 ORDER BY v)) END
        FROM sighting s WHERE s.iid = indicator.id),
    (first_seen, last_seen, expires_at, active, warninglist) = (
        SELECT min(s.first_seen), max(s.last_seen),
               CASE WHEN sum(s.retracted = 0 AND s.wl_hold = 0) > 0 THEN
                    CASE WHEN sum(s.retracted = 0 AND s.wl_hold = 0 AND s.expires_at IS NULL) > 0 THEN NULL
                         ELSE max(CASE WHEN s.retracted = 0 AND s.wl_hold = 0 THEN s.expires_at END) END
                    WHEN sum(s.retracted = 0 AND s.expires_at IS NULL) > 0 THEN NULL
                    ELSE max(CASE WHEN s.retracted = 0 THEN s.expires_at END) END,
               indicator.allowlisted = 0 AND
               coalesce(max(s.retracted = 0 AND s.wl_hold = 0 AND (s.expires_at IS NULL OR s.expires_at > :now)), 0),
               coalesce(min(nullif(s.warninglist, '')), '')
        FROM sighting s WHERE s.iid = indicator.id),
    changed_at = :now
WHERE id IN ({ids})
"""

_INSERT_INDICATORS_SQL = """
INSERT INTO indicator (type, value, allowlisted, hits, first_seen, last_seen, expires_at, reputation, severity,
                       tags, comments, reference, best_source, active, changed_at, nsrc, warninglist)
SELECT type, value, allowlisted, 1, first_seen, last_seen, CASE WHEN retracted THEN NULL ELSE exp END,
       reputation, severity, CASE WHEN retracted THEN '[]' ELSE tags END, comments, reference, :sid,
       allowlisted = 0 AND retracted = 0 AND wl_hold = 0 AND (exp IS NULL OR exp > :now), :now, 1, warninglist
FROM (SELECT *, coalesce(expires_at, CASE WHEN :aging > 0 THEN :now + :aging END) AS exp FROM stage)
WHERE true
ON CONFLICT (type, value) DO NOTHING
"""

# An existing indicator whose only source is this one: the merged provenance
# row is the effective metadata.
_SINGLE_SOURCE_SQL = """
UPDATE indicator SET
    reputation = s.reputation, severity = s.severity, comments = s.comments, reference = s.reference,
    best_source = s.sid, tags = CASE WHEN s.retracted THEN '[]' ELSE s.tags END,
    first_seen = s.first_seen, last_seen = s.last_seen,
    expires_at = CASE WHEN s.retracted THEN NULL ELSE s.expires_at END,
    allowlisted = st.allowlisted, hits = indicator.hits + 1,
    active = st.allowlisted = 0 AND s.retracted = 0 AND s.wl_hold = 0 AND (s.expires_at IS NULL OR s.expires_at > :now),
    warninglist = s.warninglist, changed_at = :now
FROM stage st JOIN sighting s ON s.iid = st.iid AND s.sid = :sid
WHERE indicator.id = st.iid AND st.iid <= :max_id AND indicator.nsrc = 1
"""

_SNAPSHOT_SQL = "UPDATE sighting SET retracted = 1 WHERE sid = :sid AND gen < :gen AND retracted = 0 RETURNING iid"


def ingest(conn: sqlite3.Connection, batch: IngestBatch) -> IngestResult:
    """Merge one batch from its source and commit it together with its checkpoint."""
    now, rows, sub, cursor = batch.now, batch.rows, batch.sub, batch.cursor
    sid = source_id(conn, batch.source)
    params = {"sid": sid, "aging": batch.aging_days * 86400, "now": now}
    with transaction(conn):
        gen = conn.execute("SELECT gen FROM source WHERE id = ?", (sid,)).fetchone()[0]
        if batch.fresh:
            gen += 1
        params["gen"] = gen
        conn.execute("DELETE FROM stage")
        _stage(conn, rows)
        nrows = len(rows)
        max_id = conn.execute("SELECT coalesce(max(id), 0) FROM indicator").fetchone()[0]
        params["max_id"] = max_id
        conn.execute(_INSERT_INDICATORS_SQL, params)
        new = conn.execute("SELECT coalesce(max(id), 0) FROM indicator").fetchone()[0] - max_id
        # had: this source already reported it; multi: it has (or gets) another source too.
        conn.execute(
            "UPDATE stage SET (iid, had, multi) = (SELECT i.id, EXISTS (SELECT 1 FROM sighting s "
            "WHERE s.iid = i.id AND s.sid = :sid), i.nsrc FROM indicator i "
            "WHERE i.type = stage.type AND i.value = stage.value)",
            params,
        )
        conn.execute("UPDATE stage SET multi = iid <= :max_id AND multi + (1 - had) > 1", params)
        held, held_examples = holds.apply(conn, params)  # an operator's retraction outlasts re-reports
        conn.execute(_upsert_sighting_sql(batch.policy), params)
        # A new indicator already carries its one source's metadata. An existing one
        # with this as its only source takes the merged provenance row as it is.
        # Only indicators with several sources (or reported twice in this batch)
        # need the full merge.
        conn.execute(
            "UPDATE indicator SET nsrc = nsrc + 1 WHERE id IN (SELECT iid FROM stage WHERE had = 0 AND iid <= :max_id)",
            params,
        )
        conn.execute(_SINGLE_SOURCE_SQL, params)
        dups = conn.execute("SELECT count(*) FROM stage WHERE iid > :max_id", params).fetchone()[0] > new
        merge = "multi" + (" OR iid > :max_id" if dups else "")
        conn.execute(
            "UPDATE indicator SET hits = indicator.hits + d.n - (indicator.id > :max_id), allowlisted = d.al "
            f"FROM (SELECT iid, count(*) AS n, max(allowlisted) AS al FROM stage WHERE {merge} GROUP BY iid) AS d "
            "WHERE indicator.id = d.iid",
            params,
        )
        conn.execute(_REFRESH_SQL.format(ids=f"SELECT iid FROM stage WHERE {merge}"), params)
        retracted = 0
        if batch.snapshot_end:
            gone = [r[0] for r in conn.execute(_SNAPSHOT_SQL, params).fetchall()]
            retracted = len(gone)
            if gone:
                _refresh_ids(conn, gone, now)
        rejections.keep(conn, sid, batch.rejected, now)
        conn.execute(
            "UPDATE source SET gen = :gen, sub = :sub, cursor = coalesce(:cursor, cursor) WHERE id = :sid",
            {
                "gen": gen,
                "sid": sid,
                "sub": _json_enc.encode(sub).decode() if sub is not None else None,
                "cursor": _json_enc.encode(cursor).decode() if cursor is not None else None,
            },
        )
    return IngestResult(new=new, updated=nrows - new, retracted=retracted, held=held, held_examples=held_examples)


def _refresh_ids(conn: sqlite3.Connection, ids: Iterable[int], now: int) -> None:
    """Recompute effective metadata and activity of ``ids`` (inside a transaction)."""
    ids = list(ids)
    for i in range(0, len(ids), 10000):
        chunk = ids[i : i + 10000]
        conn.execute("DROP TABLE IF EXISTS temp.touch")
        conn.execute("CREATE TEMP TABLE touch (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO touch VALUES (?)", ((x,) for x in chunk))
        conn.execute(_REFRESH_SQL.format(ids="SELECT id FROM touch"), {"now": now})
