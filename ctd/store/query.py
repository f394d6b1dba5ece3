"""Read-side SQL for ``ctdctl``: counts, show, search, paged export.

Rows are turned into the JSON objects ctdctl prints (times ISO 8601 UTC).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from ctd.model import SEVERITIES, iso
from ctd.store import holds, tally

_dec = msgspec.json.Decoder(list[str])

_IND_COLS = (
    "id, type, value, active, allowlisted, first_seen, last_seen, expires_at, reputation, "
    "severity, tags, comments, reference, hits, warninglist"
)


def counts(conn: sqlite3.Connection) -> dict[str, Any]:
    """Indicators by type and state, from the maintained counters (``ctd.store.tally``)."""
    return tally.read(conn).indicators


def source_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Unretracted provenance entries per source name, from the maintained counters."""
    return tally.read(conn).sources


def _sources_for(conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    for row in conn.execute(
        "SELECT s.iid, src.name, s.first_seen, s.last_seen, s.reputation, s.severity, s.tags, "
        "s.comments, s.reference, s.expires_at, s.retracted, s.warninglist, s.wl_hold "
        f"FROM sighting s JOIN source src ON src.id = s.sid WHERE s.iid IN ({marks}) ORDER BY s.iid, src.name",
        ids,
    ):
        iid, name, first, last, rep, sev, tags, comments, ref, exp, retracted, wl, held = row
        out[iid].append(
            {
                "source": name,
                "first_seen": iso(first),
                "last_seen": iso(last),
                "reputation": rep,
                "severity": SEVERITIES[sev],
                "tags": _dec.decode(tags),
                "comments": comments,
                "reference": ref,
                "expires_at": iso(exp),
                "retracted": bool(retracted),
                "warninglist": wl,
                "warninglist_held": bool(held),  # this report does not make the indicator active
            }
        )
    return out


def _render(conn: sqlite3.Connection, rows: list[tuple]) -> list[dict[str, Any]]:
    sources = _sources_for(conn, [r[0] for r in rows])
    out = []
    for iid, typ, value, active, allow, first, last, exp, rep, sev, tags, comments, ref, hits, wl in rows:
        out.append(
            {
                "type": typ,
                "value": value,
                "active": bool(active),
                "allowlisted": bool(allow),
                "warninglist": wl,
                "expires_at": iso(exp),
                "first_seen": iso(first),
                "last_seen": iso(last),
                "reputation": rep,
                "severity": SEVERITIES[sev],
                "tags": _dec.decode(tags),
                "comments": comments,
                "reference": ref,
                "hits": hits,
                "sources": sources[iid],
            }
        )
    return out


def show(conn: sqlite3.Connection, candidates: list[tuple[str, str]], raw: str) -> list[dict[str, Any]]:
    """Indicators matching any canonical (type, value) candidate, or the raw value as typed."""
    found: dict[int, tuple] = {}
    for typ, value in candidates:
        for row in conn.execute(f"SELECT {_IND_COLS} FROM indicator WHERE type = ? AND value = ?", (typ, value)):
            found[row[0]] = row
    if not found:
        for row in conn.execute(f"SELECT {_IND_COLS} FROM indicator WHERE value = ?", (raw.strip(),)):
            found[row[0]] = row
    rows = sorted(found.values())
    out = _render(conn, rows)
    for row, ind in zip(rows, out, strict=True):
        ind["operator_retraction"] = holds.for_indicator(conn, row[0])
        ind["deliveries"] = [
            {"sharing": n, "state": st, "error": err, "updated_at": iso(upd), "shared_at": iso(sh)}
            for n, st, err, upd, sh in conn.execute(
                "SELECT sh.name, d.state, d.error, d.updated_at, d.shared_at FROM delivery d "
                "JOIN sharing sh ON sh.id = d.shid WHERE d.iid = ? ORDER BY sh.name",
                (row[0],),
            )
        ]
    return out


def _where(type_: str | None, source: str | None, active: bool | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if type_:
        clauses.append("type = ?")
        params.append(type_)
    if active is not None:
        clauses.append("active = ?")
        params.append(1 if active else 0)
    if source:
        clauses.append("id IN (SELECT iid FROM sighting WHERE sid = (SELECT id FROM source WHERE name = ?))")
        params.append(source)
    return (" AND ".join(clauses) or "1"), params


def search(
    conn: sqlite3.Connection, *, type_: str | None, source: str | None, active: bool | None, limit: int
) -> list[dict[str, Any]]:
    where, params = _where(type_, source, active)
    rows = conn.execute(
        f"SELECT {_IND_COLS} FROM indicator WHERE {where} ORDER BY last_seen DESC, id LIMIT ?",
        [*params, limit],
    ).fetchall()
    return _render(conn, rows)


def export_page(
    conn: sqlite3.Connection, *, after: int, limit: int, type_: str | None, source: str | None, active: bool | None
) -> tuple[list[dict[str, Any]], int]:
    """One page of the export in id order (keyset paging keeps memory constant)."""
    where, params = _where(type_, source, active)
    rows = conn.execute(
        f"SELECT {_IND_COLS} FROM indicator WHERE id > ? AND {where} ORDER BY id LIMIT ?",
        [after, *params, limit],
    ).fetchall()
    return _render(conn, rows), (rows[-1][0] if rows else after)


def find_ids(conn: sqlite3.Connection, candidates: list[tuple[str, str]]) -> list[int]:
    ids = []
    for typ, value in candidates:
        row = conn.execute("SELECT id FROM indicator WHERE type = ? AND value = ?", (typ, value)).fetchone()
        if row:
            ids.append(row[0])
    return ids
