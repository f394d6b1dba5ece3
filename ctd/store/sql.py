"""Synchronous SQL on the store's connection. Only the store actor calls these,
one at a time, from its worker thread; each public function is one transaction.

Ingest is set-based: a batch is staged into a temp table with one
``executemany`` and then merged with a handful of INSERT ... SELECT / UPDATE
statements, so per-row work stays inside SQLite.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec

from ctd.store import changes, holds, rejections
from ctd.store.requests import Checkpoint, ExpireStep, IngestBatch, IngestResult
from ctd.store.rows import STAGE_COLUMNS as _COLUMNS
from ctd.store.rows import StageRow
from ctd.store.schema import migrate

_json_enc = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()

STAGE_COLUMNS = ", ".join(_COLUMNS)
# Rows per staging statement: SQLite binds at most 32,766 parameters.
_STAGE_CHUNK = 32766 // (len(_COLUMNS) + 1)
_by_value = itemgetter(1)
_ROW_MARKS = "(" + ",".join("?" * (len(_COLUMNS) + 1)) + ")"
# The store's page cache (the RSS it may grow by as the database outgrows it).
CACHE_KIB = 65536
TEMP_CACHE_KIB = 32768  # temp tables' page cache: an ingest batch's stage fits, a plan's millions spill


def _stage(conn: sqlite3.Connection, rows: Sequence[StageRow]) -> None:
    """Stage a batch in value order, each row with its position in the batch (``pos``).

    In value order the lookups and inserts that follow walk the (type, value)
    index page by page instead of at random: measured 20% less store time for
    new IoCs at 1M. ``pos`` keeps the batch's own order where it shows: new
    indicators are numbered in the order they were reported. The sort is
    stable, so rows naming one value twice keep their order.

    A few multi-row INSERTs rather than one step per row: ``executemany``
    releases and re-takes the GIL for every row; while a source actor parses in
    another thread each re-take can wait a whole switch interval (measured:
    8k-20k rows/s instead of 400k). A multi-row VALUES statement binds in C and
    runs as one step.
    """
    ordered = [r + (i,) for i, r in enumerate(rows)]
    try:
        ordered.sort(key=_by_value)
    except (IndexError, TypeError):
        pass  # a malformed row: the INSERT refuses it with the driver's own error
    for i in range(0, len(ordered), _STAGE_CHUNK):
        part = ordered[i : i + _STAGE_CHUNK]
        conn.execute(
            f"INSERT INTO stage ({STAGE_COLUMNS}, pos) VALUES {','.join([_ROW_MARKS] * len(part))}",
            list(chain.from_iterable(part)),
        )


def connect(path: str) -> sqlite3.Connection:
    """Open (and migrate) the database at ``path`` in WAL mode."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    # Temp tables (an ingest's stage, a sharing plan's candidates and list) and big sorts live in
    # a temp file behind a page cache of TEMP_CACHE_KIB: a plan over millions of IoCs would
    # otherwise hold them all in RAM (issue 14: flat memory whatever the list size).
    conn.execute("PRAGMA temp_store=FILE")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    migrate(conn)
    from ctd.rules.compiler import SQL_FUNCTIONS

    for name, (nargs, fn) in SQL_FUNCTIONS.items():
        conn.create_function(name, nargs, fn, deterministic=True)
    conn.execute(f"PRAGMA temp.cache_size=-{TEMP_CACHE_KIB}")
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage "
        f"(seq INTEGER PRIMARY KEY, {STAGE_COLUMNS}, pos INTEGER, iid INTEGER, had INTEGER, multi INTEGER)"
    )
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)  # a COMMIT that failed (disk full) leaves the transaction open
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, never hiding the error being handled.

    After SQLITE_FULL, an I/O error or a damaged page SQLite may already have
    rolled the transaction back itself; a ROLLBACK then fails ("no transaction
    is active") and would replace the error that says what went wrong.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


# --- sources and checkpoints ------------------------------------------------


def source_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM source WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    with transaction(conn):
        return conn.execute("INSERT INTO source(name) VALUES (?) RETURNING id", (name,)).fetchone()[0]


def get_checkpoint(conn: sqlite3.Connection, name: str) -> Checkpoint:
    row = conn.execute(
        "SELECT last_run, cursor, sub, last_success, last_error FROM source WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return Checkpoint()
    last_run, cursor, sub, last_success, last_error = row
    return Checkpoint(
        last_run=last_run,
        cursor=_json_dec.decode(cursor) if cursor else None,
        sub=_json_dec.decode(sub) if sub else None,
        last_success=last_success,
        last_error=last_error,
    )


def complete_pull(conn: sqlite3.Connection, name: str, cycle_start: int, now: int) -> None:
    """A pull cycle finished: its start becomes the checkpoint; the resume point is cleared."""
    sid = source_id(conn, name)
    with transaction(conn):
        conn.execute(
            "UPDATE source SET last_run = ?, sub = NULL, last_success = ?, last_error = NULL WHERE id = ?",
            (cycle_start, now, sid),
        )


def record_error(conn: sqlite3.Connection, name: str, error: str) -> None:
    sid = source_id(conn, name)
    with transaction(conn):
        conn.execute("UPDATE source SET last_error = ? WHERE id = ?", (error, sid))


def set_checkpoint(conn: sqlite3.Connection, name: str, last_run: int | None) -> None:
    """Operator override of "last run" (re-pull history): also drops any resume point."""
    sid = source_id(conn, name)
    with transaction(conn):
        conn.execute("UPDATE source SET last_run = ?, sub = NULL, cursor = NULL WHERE id = ?", (last_run, sid))


# --- ingest -------------------------------------------------------------------

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

# New indicators get their ids here rather than from SQLite: max_id + 1 + the row's position in the
# batch, so the stage learns them without a second lookup, in the order they were reported.
_INSERT_INDICATORS_SQL = """
INSERT INTO indicator (id, type, value, allowlisted, hits, first_seen, last_seen, expires_at, reputation, severity,
                       tags, comments, reference, best_source, active, changed_at, nsrc, warninglist)
SELECT :max_id + 1 + pos, type, value, allowlisted, 1, first_seen, last_seen,
       CASE WHEN retracted THEN NULL ELSE exp END, reputation, severity,
       CASE WHEN retracted THEN '[]' ELSE tags END, comments, reference, :sid,
       allowlisted = 0 AND retracted = 0 AND wl_hold = 0 AND (exp IS NULL OR exp > :now), :now, 1, warninglist
FROM (SELECT *, coalesce(expires_at, CASE WHEN :aging > 0 THEN :now + :aging END) AS exp FROM stage
      WHERE iid IS NULL)
WHERE true
ON CONFLICT (type, value) DO NOTHING
"""

# The stage learns which rows name an existing indicator (one index probe and one row read each)
# and of those, had: this source already reported it; multi: it has (or gets) another source too.
# With one source the indicator's best_source names it, so no provenance row is read.
_LOOKUP_SQL = """
UPDATE stage SET (iid, had, multi) = (
    SELECT i.id,
           CASE WHEN i.nsrc = 1 THEN i.best_source IS :sid
                ELSE EXISTS (SELECT 1 FROM sighting s WHERE s.iid = i.id AND s.sid = :sid) END,
           CASE WHEN i.nsrc = 1 THEN i.best_source IS NOT :sid ELSE i.nsrc > 1 END
    FROM indicator i WHERE i.type = stage.type AND i.value = stage.value)
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
FROM stage st CROSS JOIN sighting s ON s.iid = st.iid AND s.sid = :sid
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
        # Existing indicators first (one index probe each, the whole work of a re-report's lookup),
        # then only the rest are inserted, with the ids the stage already knows.
        conn.execute(_LOOKUP_SQL, params)
        missing = conn.execute("SELECT count(*) FROM stage WHERE iid IS NULL").fetchone()[0]
        new = 0
        if missing:
            new = conn.execute(_INSERT_INDICATORS_SQL, params).rowcount
            if new == missing:
                conn.execute("UPDATE stage SET iid = :max_id + 1 + pos, had = 0, multi = 0 WHERE iid IS NULL", params)
            else:  # the batch names a new value twice: the later rows take the first one's id
                conn.execute(
                    "UPDATE stage SET iid = (SELECT i.id FROM indicator i WHERE i.type = stage.type "
                    "AND i.value = stage.value), had = 0, multi = 0 WHERE iid IS NULL"
                )
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
        dups = missing > new
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
        changes.after_ingest(conn, sid, gone if batch.snapshot_end else ())
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


# --- housekeeping ---------------------------------------------------------------


# An expiry sweep reads every indicator (an index on expires_at would cost every re-report more
# than the scan costs once per housekeeping round: migration 4), in id ranges of EXPIRE_CHUNK ids,
# and returns to the store's inbox after EXPIRE_BUDGET_S so nothing waits behind the whole sweep.
EXPIRE_CHUNK = 25_000
EXPIRE_BUDGET_S = 0.04


def expire_step(conn: sqlite3.Connection, now: int, after: int = 0, budget_s: float | None = None) -> ExpireStep:
    """Expire indicators with ids after ``after``, chunk by chunk, until ``budget_s`` (default
    EXPIRE_BUDGET_S) is spent: at least one chunk."""
    budget = EXPIRE_BUDGET_S if budget_s is None else budget_s
    top = conn.execute("SELECT coalesce(max(id), 0) FROM indicator").fetchone()[0]
    expired, start = 0, time.monotonic()
    with transaction(conn):
        while True:
            upto = after + EXPIRE_CHUNK
            ids = [
                r[0]
                for r in conn.execute(
                    "UPDATE indicator SET active = 0, changed_at = :now WHERE id > :after AND id <= :upto "
                    "AND active = 1 AND expires_at IS NOT NULL AND expires_at <= :now RETURNING id",
                    {"now": now, "after": after, "upto": upto},
                )
            ]
            changes.bump_for(conn, ids)  # the sharings of these sources plan again (change generations)
            expired += len(ids)
            after = upto
            if after >= top:
                return ExpireStep(expired=expired, resume=None)
            if time.monotonic() - start >= budget:
                return ExpireStep(expired=expired, resume=after)


def expire(conn: sqlite3.Connection, now: int, budget_s: float | None = None) -> int:
    """Mark indicators whose every source entry has expired inactive (a whole sweep); returns how many."""
    total, after = 0, 0
    while True:
        step = expire_step(conn, now, after, budget_s)
        total += step.expired
        if step.resume is None:
            return total
        after = step.resume


def reapply_allowlist(conn: sqlite3.Connection, matches: Any, now: int) -> int:
    """Re-evaluate every indicator against a changed allowlist; returns how many flipped."""
    flips: list[tuple[int, int]] = []
    for iid, typ, value, flag in conn.execute("SELECT id, type, value, allowlisted FROM indicator"):
        want = 1 if matches(typ, value) else 0
        if want != flag:
            flips.append((want, iid))
    if flips:
        with transaction(conn):
            conn.executemany("UPDATE indicator SET allowlisted = ? WHERE id = ?", flips)
            _refresh_ids(conn, [iid for _, iid in flips], now)
            changes.bump_for(conn, [iid for _, iid in flips])
    return len(flips)


# --- operator overrides -----------------------------------------------------------


def set_mute(conn: sqlite3.Connection, rule: str, until: int) -> None:
    """Mute ``rule`` until ``until`` (epoch seconds; 0 = unmuted), overriding the config."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO rule_state (name, muted_until) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET muted_until = excluded.muted_until",
            (rule, until),
        )


def get_mutes(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, muted_until FROM rule_state").fetchall())


def db_file(conn: sqlite3.Connection) -> str:
    """The path of the main database file of ``conn``."""
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def db_size(conn: sqlite3.Connection) -> dict[str, int]:
    path = db_file(conn)
    out = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            out["db" + suffix.replace("-", "_")] = os.path.getsize(path + suffix)
        except OSError:
            out["db" + suffix.replace("-", "_")] = 0
    return out
