"""SQLite schema and migrations (``PRAGMA user_version`` is the schema version)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import structlog

from ctd.valuegate import value_problem

log = structlog.get_logger("ctd.store")


def _retract_values_failing_the_gate(conn: sqlite3.Connection) -> None:
    """Retract every stored value the value gate refuses (see migration 13 below).

    Every source's entry is retracted, with the reason in its comments, and the
    indicator made inactive, as if each source had retracted it: the next
    sharing pass withdraws it from every destination that holds it, like any
    retraction. Nothing is deleted: the provenance and the delivery ledger keep
    their history. The indicator's other fields are left as they were.
    """
    if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM indicator)").fetchone()[0]:
        return  # a new store: nothing to check, nothing to say
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
    if refused:  # every sharing plans again at its next pass (change generations, migration 12)
        conn.execute("UPDATE source SET changes = changes + 1")
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
    # 8: two-phase destinations and expiries (issue 11). staged = 1: the
    # destination accepted this row's push or withdrawal, which takes effect at
    # its apply step (Netskope's deploy); sharing.apply_pending says an apply is
    # owed, committed with the rows it covers. delivery.expires_at: the expiry
    # the destination was given, so a later one is pushed before it lapses
    # (unknown for rows shared before: 0, so an expiry-enforcing destination
    # gets them once more).
    """
    ALTER TABLE delivery ADD COLUMN staged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE delivery ADD COLUMN expires_at INTEGER;
    ALTER TABLE sharing ADD COLUMN apply_pending INTEGER NOT NULL DEFAULT 0;
    UPDATE delivery SET expires_at = 0 WHERE state = 'shared';
    """,
    # 9: counters an operator polls (issue 11): indicators by type and state,
    # live reports per source, ledger rows per sharing and state. Triggers keep
    # them in the transaction that changes the rows, so `ctdctl status` reads a
    # few dozen rows instead of scanning the store, whatever code path (ingest,
    # expiry, retraction, a future DELETE) changed them. A trigger costs only
    # where a count moves: an indicator inserted or flipping active, a report
    # inserted or (un)retracted, a ledger row changing state; a re-sighting
    # that changes neither pays one WHEN test per row. The application id marks
    # the file as ctd's (preflight tells another program's database apart).
    """
    PRAGMA application_id = 1668572209;
    CREATE TABLE tally_indicator (
        type    TEXT NOT NULL,
        active  INTEGER NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (type, active)
    ) WITHOUT ROWID;
    CREATE TABLE tally_source (
        sid     INTEGER PRIMARY KEY,
        n       INTEGER NOT NULL       -- unretracted sighting rows
    );
    CREATE TABLE tally_delivery (
        shid    INTEGER NOT NULL,
        state   TEXT NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (shid, state)
    ) WITHOUT ROWID;
    INSERT INTO tally_indicator SELECT type, active, count(*) FROM indicator GROUP BY type, active;
    INSERT INTO tally_source SELECT sid, count(*) FROM sighting WHERE retracted = 0 GROUP BY sid;
    INSERT INTO tally_delivery SELECT shid, state, count(*) FROM delivery GROUP BY shid, state;
    CREATE TRIGGER tally_indicator_insert AFTER INSERT ON indicator BEGIN
        INSERT INTO tally_indicator VALUES (new.type, new.active, 1)
        ON CONFLICT (type, active) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tally_indicator_delete AFTER DELETE ON indicator BEGIN
        UPDATE tally_indicator SET n = n - 1 WHERE type = old.type AND active = old.active;
    END;
    CREATE TRIGGER tally_indicator_update AFTER UPDATE OF type, active ON indicator
    WHEN old.active IS NOT new.active OR old.type IS NOT new.type BEGIN
        UPDATE tally_indicator SET n = n - 1 WHERE type = old.type AND active = old.active;
        INSERT INTO tally_indicator VALUES (new.type, new.active, 1)
        ON CONFLICT (type, active) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tally_sighting_insert AFTER INSERT ON sighting WHEN new.retracted = 0 BEGIN
        INSERT INTO tally_source VALUES (new.sid, 1) ON CONFLICT (sid) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tally_sighting_delete AFTER DELETE ON sighting WHEN old.retracted = 0 BEGIN
        UPDATE tally_source SET n = n - 1 WHERE sid = old.sid;
    END;
    CREATE TRIGGER tally_sighting_update AFTER UPDATE OF sid, retracted ON sighting
    WHEN (old.retracted = 0) IS NOT (new.retracted = 0) OR old.sid IS NOT new.sid BEGIN
        UPDATE tally_source SET n = n - 1 WHERE sid = old.sid AND old.retracted = 0;
        INSERT INTO tally_source SELECT new.sid, 1 WHERE new.retracted = 0
        ON CONFLICT (sid) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tally_delivery_insert AFTER INSERT ON delivery BEGIN
        INSERT INTO tally_delivery VALUES (new.shid, new.state, 1)
        ON CONFLICT (shid, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER tally_delivery_delete AFTER DELETE ON delivery BEGIN
        UPDATE tally_delivery SET n = n - 1 WHERE shid = old.shid AND state = old.state;
    END;
    CREATE TRIGGER tally_delivery_update AFTER UPDATE OF shid, state ON delivery
    WHEN old.state IS NOT new.state OR old.shid IS NOT new.shid BEGIN
        UPDATE tally_delivery SET n = n - 1 WHERE shid = old.shid AND state = old.state;
        INSERT INTO tally_delivery VALUES (new.shid, new.state, 1)
        ON CONFLICT (shid, state) DO UPDATE SET n = n + 1;
    END;
    """,
    # 10: an operator's retraction is kept against the source's re-reports
    # (ctdctl indicators retract/unretract, ctd/store/holds.py). sid 0: every
    # source, including ones that report the value later.
    """
    CREATE TABLE retraction_hold (
        iid   INTEGER NOT NULL,
        sid   INTEGER NOT NULL,
        at    INTEGER NOT NULL,
        until INTEGER,            -- NULL: until lifted (ctdctl indicators unretract)
        PRIMARY KEY (iid, sid)
    ) WITHOUT ROWID;
    """,
    # 11: what each source rejected (issue 12): the last KEEP_REJECTED records per source and
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
    # 12: change generations (issue 14). source.changes moves in every transaction that may
    # change what a sharing reading that source selects (its ingest, and another source's ingest
    # of an indicator it reports too, expiry, retraction, allowlist and guard re-evaluation), so
    # a sharing pass compares them with the last pass's and skips planning when none moved
    # (ctd/store/changes.py).
    """
    ALTER TABLE source ADD COLUMN changes INTEGER NOT NULL DEFAULT 0;
    """,
    # 13: values an older ctd stored before the value gate (ctd.valuegate.value_problem)
    # refused them (control characters, line breaks, over-long values...): line
    # renderers refuse them, but JSON destinations still received them and ctdctl
    # cannot name them. Retracted from every source, so sharing withdraws them.
    _retract_values_failing_the_gate,
    # 14: a source's reports, by source (issue 14: latency). A sharing of a few small sources in a
    # large store plans from their reports instead of scanning every indicator, and a small
    # source's snapshot end finds its stale reports without scanning everyone's. Unlike
    # migration 4's (sid, gen), neither column changes when a source re-reports: an ingest
    # writes this index only for a report it has not seen before, at the end of its source's
    # range when the indicator is new.
    """
    CREATE INDEX sighting_by_source ON sighting(sid, iid);
    """,
]

# PRAGMA application_id of a ctd database (b"ctd1" as a big-endian integer), set by migration 9.
APPLICATION_ID = 0x63746431


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
            if conn.in_transaction:  # SQLite may have rolled back already (disk full): keep the real error
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
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
