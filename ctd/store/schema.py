"""SQLite schema and migrations (``PRAGMA user_version`` is the schema version)."""

from __future__ import annotations

import sqlite3

# Each entry migrates from version i to i+1. Never edit a shipped migration:
# append a new one.
MIGRATIONS: list[str] = [
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
    # 8: what each source rejected (issue 12): the last KEEP_REJECTED records per source and
    # reason class (malformed, unsupported_type, unsupported_pattern, allowlisted, field),
    # written with the batch they came in, for `ctdctl sources show`.
    """
    CREATE TABLE rejection (
        sid    INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        seq    INTEGER NOT NULL,           -- per source, increasing: the newest is the highest
        at     INTEGER NOT NULL,           -- ingest time of the batch it came with
        place  TEXT NOT NULL,              -- where the source has it: line 17, item 3, an object id
        reason TEXT NOT NULL,
        PRIMARY KEY (sid, kind, seq)
    ) WITHOUT ROWID;
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to the latest schema; returns the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise sqlite3.DatabaseError(f"database schema version {version} is newer than this ctd ({len(MIGRATIONS)})")
    for i in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(MIGRATIONS[i]):
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
