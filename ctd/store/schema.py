"""SQLite schema and migrations (``PRAGMA user_version`` is the schema version)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import structlog

from ctd.valuegate import value_problem

log = structlog.get_logger("ctd.store")


def _retract_values_failing_the_gate(conn: sqlite3.Connection) -> None:
    """Retract every stored value the value gate refuses (see migration 8 below).

    Every source's entry is retracted, with the reason in its comments, and the
    indicator made inactive, as if each source had retracted it: the next
    sharing pass withdraws it from every destination that holds it, like any
    retraction. Nothing is deleted: the provenance and the delivery ledger keep
    their history. The indicator's other fields are left as they were.
    """
    refused = [
        (iid, type_, reason)
        for iid, type_, value in conn.execute("SELECT id, type, value FROM indicator")  # streamed, not held
        if (reason := value_problem(value, type_)) is not None
    ]
    now = int(time.time())
    for iid, _, reason in refused:
        note = f"retracted by ctd: stored before the value gate, which refuses it ({reason})"
        conn.execute("UPDATE sighting SET retracted = 1, comments = ? WHERE iid = ?", (note, iid))
        conn.execute(
            "UPDATE indicator SET active = 0, expires_at = NULL, tags = '[]', comments = ?, changed_at = ? "
            "WHERE id = ?",
            (note, now, iid),
        )
    # One line, whatever the count: the values themselves may be huge or hostile, so examples name type and id.
    (log.warning if refused else log.info)(
        "stored values checked against the value gate; those it refuses retracted",
        ctd_event="store_values_retracted",
        ctd_count=len(refused),
        examples=[f"{type_} #{iid}: {reason}" for iid, type_, reason in refused[:5]],
    )


# Each entry migrates from version i to i+1: SQL, or a function for what SQL
# cannot say. Never edit a shipped migration: append a new one.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: indicators, per-source provenance, sources with checkpoints.
    """
    CREATE TABLE source (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        last_run     INTEGER,          -- start of the last successful pull cycle
        cursor       TEXT,             -- adapter state (JSON), committed with batches
        sub          TEXT,             -- resume point of a half-done pull (JSON)
        gen          INTEGER NOT NULL DEFAULT 0,  -- snapshot generation
        last_success INTEGER,
        last_error   TEXT
    );
    CREATE TABLE indicator (
        id          INTEGER PRIMARY KEY,
        type        TEXT NOT NULL,
        value       TEXT NOT NULL,
        active      INTEGER NOT NULL DEFAULT 0,
        allowlisted INTEGER NOT NULL DEFAULT 0,
        first_seen  INTEGER,
        last_seen   INTEGER,
        expires_at  INTEGER,           -- NULL: never expires
        reputation  INTEGER NOT NULL DEFAULT 5,
        severity    INTEGER NOT NULL DEFAULT 0,
        tags        TEXT NOT NULL DEFAULT '[]',
        comments    TEXT NOT NULL DEFAULT '',
        reference   TEXT NOT NULL DEFAULT '',
        best_source INTEGER,           -- source.id the effective metadata comes from
        hits        INTEGER NOT NULL DEFAULT 0,
        changed_at  INTEGER NOT NULL DEFAULT 0,  -- last change of anything a destination sees
        UNIQUE (type, value)
    );
    CREATE INDEX indicator_expiry ON indicator(expires_at) WHERE active = 1;
    CREATE TABLE sighting (
        iid         INTEGER NOT NULL,
        sid         INTEGER NOT NULL,
        first_seen  INTEGER,
        last_seen   INTEGER,
        reputation  INTEGER NOT NULL,
        severity    INTEGER NOT NULL,
        tags        TEXT NOT NULL,
        comments    TEXT NOT NULL,
        reference   TEXT NOT NULL,
        expires_at  INTEGER,
        retracted   INTEGER NOT NULL DEFAULT 0,
        gen         INTEGER NOT NULL,
        PRIMARY KEY (iid, sid)
    ) WITHOUT ROWID;
    CREATE INDEX sighting_source ON sighting(sid, gen);
    """,
    # 2: sharing configurations and the delivery ledger.
    """
    CREATE TABLE sharing (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        list_hash    TEXT,             -- full-replace: hash of the list last delivered
        last_run     INTEGER,
        last_success INTEGER,
        last_error   TEXT
    );
    CREATE TABLE delivery (
        shid        INTEGER NOT NULL,
        iid         INTEGER NOT NULL,
        state       TEXT NOT NULL,     -- pending shared failed retract_pending retracted unshared
        fp          TEXT,              -- fingerprint of what was (to be) delivered
        updated_at  INTEGER NOT NULL,
        shared_at   INTEGER,
        error       TEXT,
        PRIMARY KEY (shid, iid)
    ) WITHOUT ROWID;
    CREATE INDEX delivery_state ON delivery(shid, state);
    CREATE INDEX delivery_iid ON delivery(iid);
    """,
    # 3: operator overrides of a rule's mute (ctdctl rules mute/unmute).
    """
    CREATE TABLE rule_state (
        name        TEXT PRIMARY KEY,
        muted_until INTEGER NOT NULL   -- 0: explicitly unmuted
    );
    """,
    # 4: ingest speed. Every re-sighting rewrites a sighting's gen and an
    # indicator's expiry, so these indexes cost more on each pull than the
    # scans they save (a snapshot's end, the expiry sweep) cost once.
    """
    DROP INDEX sighting_source;
    DROP INDEX indicator_expiry;
    """,
    # 5: how many sources an indicator has, so the common case (one source
    # re-reporting) is merged without scanning its provenance.
    """
    ALTER TABLE indicator ADD COLUMN nsrc INTEGER NOT NULL DEFAULT 0;
    UPDATE indicator SET nsrc = (SELECT count(*) FROM sighting WHERE iid = indicator.id);
    """,
    # 6: the destination's id of what ctd created there (PushResult.ids), so a
    # withdrawal deletes exactly that entry and never one ctd did not create.
    """
    ALTER TABLE delivery ADD COLUMN remote_id TEXT;
    """,
    # 7: the false-positive guard (issue 16). A source's report that hit a MISP
    # warning list keeps the list's name; wl_hold = 1 when the plugin's action
    # is "inactive" (the report then does not make the indicator active). The
    # indicator shows a list that flagged it; source.guard is the signature of
    # the guard the source's reports were last checked with (lists, versions,
    # action), so a changed guard is re-applied to what is stored.
    """
    ALTER TABLE sighting ADD COLUMN warninglist TEXT NOT NULL DEFAULT '';
    ALTER TABLE sighting ADD COLUMN wl_hold INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE indicator ADD COLUMN warninglist TEXT NOT NULL DEFAULT '';
    ALTER TABLE source ADD COLUMN guard TEXT;
    """,
    # 8: values an older ctd stored before the value gate (ctd.valuegate.value_problem)
    # refused them (control characters, line breaks, over-long values...): line
    # renderers refuse them, but JSON destinations still received them and ctdctl
    # cannot name them. Retracted from every source, so sharing withdraws them.
    _retract_values_failing_the_gate,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to the latest schema; returns the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise sqlite3.DatabaseError(f"database schema version {version} is newer than this ctd ({len(MIGRATIONS)})")
    for i in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = MIGRATIONS[i]
            if callable(step):
                step(conn)
            else:
                for stmt in _statements(step):
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
