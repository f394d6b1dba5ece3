"""Synchronous SQL of the sharing layer: candidate selection, limits, the delivery ledger.

A pass is planned in one transaction: the rule selects the candidates into a
per-sharing temp table, limits cut them newest-first, and the ledger is
brought up to date (``pending`` to push, ``retract_pending`` to withdraw,
``unshared`` over a limit). The actor then delivers pending rows batch by
batch and records each batch's outcome, so a restart resumes where it stopped.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from ctd.model import SEVERITIES, ShareItem
from ctd.store import changes, tally
from ctd.store.requests import Plan, PlanSharing, Selection
from ctd.store.sql import transaction

_tags = msgspec.json.Decoder(list[str])

FP_SQL = "i.severity || '|' || i.reputation || '|' || i.tags || '|' || i.comments || '|' || i.reference"
SIZE_SQL = {
    "text": "length(CAST(i.value AS BLOB))",
    "json": "length(CAST(json_quote(i.value) AS BLOB))",
}
LIVE_FROM = (
    "EXISTS (SELECT 1 FROM sighting s JOIN source src ON src.id = s.sid "
    "WHERE s.iid = i.id AND s.retracted = 0 AND src.name IN ({marks}))"
)
# The same, driven by those sources' reports (the sighting_by_source index) instead of a scan of
# every indicator: for sources that report few of the store's indicators.
LIVE_BY_SOURCE = (
    "i.id IN (SELECT s.iid FROM source src JOIN sighting s ON s.sid = src.id "
    "WHERE src.name IN ({marks}) AND s.retracted = 0)"
)
# By source when the sources' live reports are at most this share of the active indicators: each
# report costs a few index probes where a scan reads one row per indicator.
BY_SOURCE_SHARE = 0.25
# Loop prevention: never back to a plugin that reported the value itself.
NOT_FROM_DEST = (
    "NOT EXISTS (SELECT 1 FROM sighting s JOIN source src ON src.id = s.sid WHERE s.iid = i.id AND src.name = ?)"
)
# ... unless this sharing put it there first: a destination that reports (echoes) what ctd shared
# with it must not make ctd withdraw it (a block withdrawn because it worked).
SHARED_HERE = (
    "EXISTS (SELECT 1 FROM delivery d WHERE d.shid = ? AND d.iid = i.id AND d.shared_at IS NOT NULL "
    "AND d.state IN ('shared', 'pending', 'retract_pending'))"
)
# Per-sharing temp tables of a plan: the candidates, and (full-replace) the list numbered newest first.
CAND_TABLE = "cand_{}"
LIST_TABLE = "list_{}"
ITEM_COLS = (
    "i.id, i.type, i.value, i.severity, i.reputation, i.tags, i.comments, i.reference, "
    "i.first_seen, i.last_seen, i.expires_at, "
    "(SELECT group_concat(src.name, char(31)) FROM sighting s JOIN source src ON src.id = s.sid "
    " WHERE s.iid = i.id AND s.retracted = 0)"
)


def sharing_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM sharing WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    with transaction(conn):
        return conn.execute("INSERT INTO sharing(name) VALUES (?) RETURNING id", (name,)).fetchone()[0]


def selection_where(sel: Selection, shid: int | None = None, by_source: bool = False) -> tuple[str, list[Any]]:
    """A WHERE clause over ``indicator i`` and its params for ``sel``.

    The rule is compiled here, at the store, because its SQL is SQLite's dialect.
    With ``shid`` (planning a sharing), loop prevention spares what that sharing
    already shared before the destination reported it. ``by_source``: select
    from the sources' reports rather than scanning (see ``few_reports``).
    """
    rule_sql, params = sel.rule.sql(sel.at)
    if sel.types is not None:
        rule_sql = f"({rule_sql}) AND i.type IN ({','.join('?' * len(sel.types))})"
        params.extend(sel.types)
    parts = ["i.active = 1", f"({rule_sql})"]
    if sel.sources is not None:
        parts.append((LIVE_BY_SOURCE if by_source else LIVE_FROM).format(marks=",".join("?" * len(sel.sources))))
        params.extend(sel.sources)
    if sel.not_from is not None:
        if shid is None:
            parts.append(NOT_FROM_DEST)
            params.append(sel.not_from)
        else:
            parts.append(f"({NOT_FROM_DEST} OR {SHARED_HERE})")
            params.extend((sel.not_from, shid))
    if sel.seen_since is not None:
        parts.append("i.last_seen >= ?")
        params.append(sel.seen_since)
    return " AND ".join(parts), params


def few_reports(conn: sqlite3.Connection, sources: tuple[str, ...] | None) -> bool:
    """Do ``sources`` report few of the active indicators (from the maintained counters)?"""
    if sources is None:
        return False
    reports = conn.execute(
        f"SELECT coalesce(sum(t.n), 0) FROM tally_source t JOIN source src ON src.id = t.sid "
        f"WHERE src.name IN ({','.join('?' * len(sources))})",
        sources,
    ).fetchone()[0]
    active = conn.execute("SELECT coalesce(sum(n), 0) FROM tally_indicator WHERE active = 1").fetchone()[0]
    return reports <= active * BY_SOURCE_SHARE


def _select_candidates(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    params: list[Any],
    size: str,
    overhead: int,
    max_entries: int | None,
    max_bytes: int | None,
) -> None:
    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute(
        f"CREATE TEMP TABLE {table} (iid INTEGER PRIMARY KEY, last_seen INTEGER, size INTEGER, "
        "fp TEXT, exp INTEGER, fit INTEGER NOT NULL DEFAULT 1)"
    )
    conn.execute(
        f"INSERT INTO {table} (iid, last_seen, size, fp, exp) "
        f"SELECT i.id, i.last_seen, {SIZE_SQL[size]} + {int(overhead)}, {FP_SQL}, i.expires_at "
        f"FROM indicator i WHERE {where}",
        params,
    )
    if max_entries is not None or max_bytes is not None:
        # Newest first: once the running count or size passes a limit, the rest is out.
        conn.execute(
            f"UPDATE {table} SET fit = (w.n <= :maxn AND w.cum <= :maxb) FROM ("
            f" SELECT iid, row_number() OVER o AS n, sum(size) OVER o AS cum FROM {table}"
            "  WINDOW o AS (ORDER BY last_seen DESC, iid DESC)) AS w "
            f"WHERE w.iid = {table}.iid",
            {
                "maxn": max_entries if max_entries is not None else 1 << 62,
                "maxb": max_bytes if max_bytes is not None else 1 << 62,
            },
        )


# A destination that enforces expiries drops its copy at the expiry it was given (d.expires_at).
# When ctd now keeps the IoC longer, it is pushed again once that copy has passed half its life
# (shared_at -> expires_at): it never lapses there while ctd keeps it, and a daily re-sighting
# costs one push per half-life, not one per sighting. A copy without expiry (NULL) never lapses.
EXPIRY_DUE = (
    "(:expiry AND d.state = 'shared' AND d.expires_at IS NOT NULL AND (c.exp IS NULL OR c.exp > d.expires_at) "
    "AND 2 * :now >= d.expires_at + coalesce(d.shared_at, 0))"
)


def plan(conn: sqlite3.Connection, req: PlanSharing) -> Plan:
    """Select what should be at the destination now and update the ledger to match.

    A row staged at the destination (accepted, waiting for its apply step) that
    changes state here is unstaged: its new state is delivered again.
    """
    shid = sharing_id(conn, req.sharing)
    table = CAND_TABLE.format(shid)
    now = req.now
    where, params = selection_where(req.selection, shid, few_reports(conn, req.selection.sources))
    with transaction(conn):
        conn.execute("UPDATE sharing SET last_run = ? WHERE id = ?", (now, shid))
        _select_candidates(conn, table, where, params, req.size, req.overhead, req.max_entries, req.max_bytes)
        cands, fit = conn.execute(f"SELECT count(*), coalesce(sum(fit), 0) FROM {table}").fetchone()
        if req.incremental:
            conn.execute(
                "INSERT INTO delivery (shid, iid, state, fp, updated_at) "
                f"SELECT :shid, c.iid, 'pending', c.fp, :now FROM {table} c "
                "LEFT JOIN delivery d ON d.shid = :shid AND d.iid = c.iid "
                "WHERE c.fit AND (d.iid IS NULL OR d.state IN ('retract_pending', 'retracted', 'unshared') "
                f"  OR (d.state IN ('shared', 'failed', 'pending') AND d.fp IS NOT c.fp) OR {EXPIRY_DUE}) "
                "ON CONFLICT (shid, iid) DO UPDATE SET state = 'pending', fp = excluded.fp, "
                "  updated_at = excluded.updated_at, error = NULL, staged = 0",
                {"shid": shid, "now": now, "expiry": req.expiry},
            )
            conn.execute(
                "UPDATE delivery SET state = 'retract_pending', updated_at = :now, staged = 0, "
                f"error = CASE WHEN iid IN (SELECT iid FROM {table} WHERE NOT fit) THEN 'over limit' END "
                "WHERE shid = :shid AND state IN ('shared', 'pending') "
                f"AND iid NOT IN (SELECT iid FROM {table} WHERE fit)",
                {"now": now, "shid": shid},
            )
            _mark_over_limit(conn, shid, table, now, keep_states=("retract_pending",))
            conn.execute(f"DROP TABLE temp.{table}")  # a pass reads the ledger from here on
        else:
            _number_list(conn, shid, table)
        owed = conn.execute("SELECT apply_pending FROM sharing WHERE id = ?", (shid,)).fetchone()[0]
        last_hash = conn.execute("SELECT list_hash FROM sharing WHERE id = ?", (shid,)).fetchone()[0]
        recheck = None
        if req.expiry:  # the next copy there due to be pushed again (EXPIRY_DUE), if nothing else changes
            recheck = conn.execute(
                "SELECT min((expires_at + coalesce(shared_at, 0) + 1) / 2) FROM delivery "
                "WHERE shid = ? AND state = 'shared' AND expires_at IS NOT NULL "
                "AND expires_at + coalesce(shared_at, 0) > 2 * ?",
                (shid, now),
            ).fetchone()[0]
    return Plan(
        candidates=cands, over_limit=cands - fit, apply_pending=bool(owed), recheck_at=recheck, last_hash=last_hash
    )


def _number_list(conn: sqlite3.Connection, shid: int, cand: str) -> None:
    """Number what fits newest first: the full list as ``ctd.store.fulllist`` reads it in chunks."""
    lst = LIST_TABLE.format(shid)
    conn.execute(f"DROP TABLE IF EXISTS temp.{lst}")
    conn.execute(f"CREATE TEMP TABLE {lst} (pos INTEGER PRIMARY KEY, iid INTEGER NOT NULL, fp TEXT)")
    # Rowids are handed out as rows are inserted: in the SELECT's order.
    conn.execute(f"INSERT INTO {lst} (iid, fp) SELECT iid, fp FROM {cand} WHERE fit ORDER BY last_seen DESC, iid DESC")


def _mark_over_limit(conn: sqlite3.Connection, shid: int, table: str, now: int, keep_states: tuple[str, ...]) -> None:
    marks = ",".join("?" * len(keep_states)) or "''"
    conn.execute(
        "INSERT INTO delivery (shid, iid, state, fp, updated_at, error) "
        f"SELECT ?, iid, 'unshared', fp, ?, 'over limit' FROM {table} WHERE NOT fit "
        "ON CONFLICT (shid, iid) DO UPDATE SET "
        f"state = CASE WHEN delivery.state IN ({marks}) THEN delivery.state ELSE 'unshared' END, "
        "error = 'over limit', updated_at = excluded.updated_at",
        (shid, now, *keep_states),
    )


def _item(row: tuple, remote_id: str | None = None) -> tuple[int, ShareItem]:
    iid, typ, value, sev, rep, tags, comments, ref, first, last, exp, srcs = row
    return iid, ShareItem(
        type=typ,
        value=value,
        severity=SEVERITIES[sev],
        reputation=rep,
        tags=tuple(_tags.decode(tags)),
        comments=comments,
        reference=ref,
        first_seen=first,
        last_seen=last,
        expires_at=exp,
        sources=tuple(srcs.split("\x1f")) if srcs else (),
        remote_id=remote_id,
    )


def fetch_pending(conn: sqlite3.Connection, name: str, retraction: bool, limit: int) -> list[tuple[int, ShareItem]]:
    """Up to ``limit`` ledger rows waiting to be pushed (or withdrawn), newest first, as deliverable items.

    Each item carries the destination's id recorded for it (``remote_id``), if any.
    """
    shid = sharing_id(conn, name)
    state = "retract_pending" if retraction else "pending"
    rows = conn.execute(
        f"SELECT {ITEM_COLS}, d.remote_id FROM delivery d JOIN indicator i ON i.id = d.iid "
        "WHERE d.shid = ? AND d.state = ? AND d.staged = 0 ORDER BY i.last_seen DESC, i.id DESC LIMIT ?",
        (shid, state, limit),
    ).fetchall()
    return [_item(r[:-1], r[-1]) for r in rows]


def record(
    conn: sqlite3.Connection,
    name: str,
    *,
    done: list[int],
    rejected: dict[int, str],
    retraction: bool,
    now: int,
    ids: dict[int, str] | None = None,
    expires: dict[int, int | None] | None = None,
    staged: bool = False,
) -> None:
    """Record a delivered batch: accepted rows become shared (or retracted), refused ones failed.

    ``ids`` are the destination's ids of what a push created; a withdrawn row forgets its id
    (the entry is gone), a pushed row without a new id keeps the one recorded. ``expires``: the
    expiry each push carried. With ``staged`` the destination applies changes in a second step:
    accepted rows are only marked staged and the sharing owes an apply, in this same
    transaction; ``record_applied`` finishes them.
    """
    shid = sharing_id(conn, name)
    ids = ids or {}
    expires = expires or {}
    with transaction(conn):
        if staged:
            state = "retract_pending" if retraction else "pending"
            conn.executemany(
                "UPDATE delivery SET staged = 1, updated_at = ?, remote_id = coalesce(?, remote_id), "
                "expires_at = CASE WHEN state = 'pending' THEN ? ELSE expires_at END "
                "WHERE shid = ? AND iid = ? AND state = ? AND staged = 0",
                [(now, ids.get(i), expires.get(i), shid, i, state) for i in done],
            )
            conn.execute("UPDATE sharing SET apply_pending = 1 WHERE id = ?", (shid,))
        elif retraction:
            conn.executemany(
                "UPDATE delivery SET state = CASE WHEN error = 'over limit' THEN 'unshared' ELSE 'retracted' END, "
                "updated_at = ?, remote_id = NULL WHERE shid = ? AND iid = ? AND state = 'retract_pending'",
                [(now, shid, i) for i in done],
            )
        else:
            conn.executemany(
                "UPDATE delivery SET state = 'shared', updated_at = ?, shared_at = ?, error = NULL, "
                "remote_id = coalesce(?, remote_id), expires_at = ? WHERE shid = ? AND iid = ? AND state = 'pending'",
                [(now, now, ids.get(i), expires.get(i), shid, i) for i in done],
            )
        conn.executemany(
            "UPDATE delivery SET state = 'failed', updated_at = ?, error = ?, staged = 0 WHERE shid = ? AND iid = ?",
            [(now, reason, shid, i) for i, reason in rejected.items()],
        )


def record_applied(conn: sqlite3.Connection, name: str, *, now: int) -> tuple[int, int]:
    """The destination applied what was staged: staged rows become shared, retracted (or unshared
    when withdrawn for a limit), and the sharing owes no apply. Returns (shared, retracted)."""
    shid = sharing_id(conn, name)
    with transaction(conn):
        shared = conn.execute(
            "UPDATE delivery SET state = 'shared', staged = 0, shared_at = ?, updated_at = ?, error = NULL "
            "WHERE shid = ? AND staged = 1 AND state = 'pending'",
            (now, now, shid),
        ).rowcount
        withdrawn = conn.execute(
            "UPDATE delivery SET state = CASE WHEN error = 'over limit' THEN 'unshared' ELSE 'retracted' END, "
            "staged = 0, updated_at = ?, remote_id = NULL WHERE shid = ? AND staged = 1 AND state = 'retract_pending'",
            (now, shid),
        ).rowcount
        conn.execute("UPDATE delivery SET staged = 0 WHERE shid = ? AND staged = 1", (shid,))
        conn.execute("UPDATE sharing SET apply_pending = 0 WHERE id = ?", (shid,))
    return shared, withdrawn


def record_full(
    conn: sqlite3.Connection,
    name: str,
    *,
    list_hash: str | None,
    rejected: dict[int, str],
    now: int,
    unchanged: bool = False,
) -> int:
    """The full list was delivered (or was unchanged): bring the ledger to the planned state.

    The plan's temp tables are dropped after: they may hold millions of rows.
    """
    shid = sharing_id(conn, name)
    table = CAND_TABLE.format(shid)
    try:
        return _record_full(conn, shid, table, list_hash, rejected, now, unchanged)
    finally:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        conn.execute(f"DROP TABLE IF EXISTS temp.{LIST_TABLE.format(shid)}")


def _record_full(
    conn: sqlite3.Connection,
    shid: int,
    table: str,
    list_hash: str | None,
    rejected: dict[int, str],
    now: int,
    unchanged: bool,
) -> int:
    with transaction(conn):
        if unchanged:
            # The destination already holds exactly this list and the ledger was
            # brought to it when it was delivered; only what fell over a limit
            # may have changed.
            _mark_over_limit(conn, shid, table, now, keep_states=())
            return 0
        # A full list is applied (if the destination needs it) before it is recorded.
        conn.execute("UPDATE delivery SET staged = 0 WHERE shid = ? AND staged = 1", (shid,))
        conn.execute("UPDATE sharing SET apply_pending = 0 WHERE id = ?", (shid,))
        conn.execute(
            "INSERT INTO delivery (shid, iid, state, fp, updated_at, shared_at) "
            f"SELECT ?, iid, 'shared', fp, ?, ? FROM {table} WHERE fit "
            "ON CONFLICT (shid, iid) DO UPDATE SET state = 'shared', fp = excluded.fp, error = NULL, "
            "  updated_at = CASE WHEN delivery.state = 'shared' THEN delivery.updated_at ELSE excluded.updated_at END, "
            "  shared_at = CASE WHEN delivery.state = 'shared' THEN delivery.shared_at ELSE excluded.shared_at END",
            (shid, now, now),
        )
        conn.executemany(
            "UPDATE delivery SET state = 'failed', error = ?, updated_at = ? WHERE shid = ? AND iid = ?",
            [(reason, now, shid, i) for i, reason in rejected.items()],
        )
        # Absent from the delivered list: withdrawn from the destination.
        withdrawn = conn.execute(
            "UPDATE delivery SET state = 'retracted', updated_at = ? "
            f"WHERE shid = ? AND state IN ('shared', 'pending', 'retract_pending') "
            f"AND iid NOT IN (SELECT iid FROM {table} WHERE fit)",
            (now, shid),
        ).rowcount
        _mark_over_limit(conn, shid, table, now, keep_states=())
        if list_hash is not None:
            conn.execute("UPDATE sharing SET list_hash = ? WHERE id = ?", (list_hash, shid))
    return withdrawn


def finish(conn: sqlite3.Connection, name: str, *, now: int, error: str | None) -> None:
    shid = sharing_id(conn, name)
    with transaction(conn):
        if error is None:
            conn.execute("UPDATE sharing SET last_success = ?, last_error = NULL WHERE id = ?", (now, shid))
        else:
            conn.execute("UPDATE sharing SET last_error = ? WHERE id = ?", (error, shid))


def resync(conn: sqlite3.Connection, name: str, *, since: int | None) -> int:
    """Mark matching delivered IoCs (last seen since ``since``) to be pushed again."""
    shid = sharing_id(conn, name)
    with transaction(conn):
        conn.execute("UPDATE sharing SET list_hash = NULL WHERE id = ?", (shid,))
        changes.bump_all(conn)  # rare (an operator's sync): every sharing plans again
        return conn.execute(
            "UPDATE delivery SET fp = NULL WHERE shid = ? AND state IN ('shared', 'failed') "
            "AND iid IN (SELECT id FROM indicator WHERE last_seen >= ?)",
            (shid, since if since is not None else -(1 << 62)),
        ).rowcount


def ledger_counts(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """Entries per state and the last run/success/error, from the maintained counters (``ctd.store.tally``)."""
    return tally.ledger(tally.read(conn), name)


def ledger_rows(conn: sqlite3.Connection, name: str, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
    shid = sharing_id(conn, name)
    marks = ",".join("?" * len(states))
    return [
        {"type": t, "value": v, "state": st, "error": err, "updated_at": upd}
        for t, v, st, err, upd in conn.execute(
            "SELECT i.type, i.value, d.state, d.error, d.updated_at FROM delivery d JOIN indicator i ON i.id = d.iid "
            f"WHERE d.shid = ? AND d.state IN ({marks}) ORDER BY d.updated_at DESC LIMIT ?",
            (shid, *states, limit),
        )
    ]
