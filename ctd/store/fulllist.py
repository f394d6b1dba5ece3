"""A planned full list, read in chunks: what a full-replace destination receives (issue 14).

Planning a full-replace sharing (``ledger.plan``) numbers the entries that fit, newest
first, in a per-sharing temp table (``list_<id>``: position, indicator, fingerprint). That
table is the list's snapshot: which indicators, in which order, with which
fingerprint. The sharing actor then reads it ``chunk`` by ``chunk`` (keyset on
the position: each read is a short range scan, so the store is never held for
long and serves ingest and ``ctdctl`` between chunks), hashes it and hands it
to the destination as it goes: no process ever holds the whole list.

The hash (``requests.list_hash_entry``: type, value and fingerprint of each
entry in list order) is the one ctd computed before lists were streamed, so a
list delivered before an upgrade is recognised as unchanged after it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence

from ctd.model import INDICATOR_TYPES, ShareItem
from ctd.store import ledger
from ctd.store.requests import LIST_CHUNK_MAX, list_hash_entry

# A rejected-value lookup names at most this many values per statement.
_LOOKUP = 500


def list_hash(conn: sqlite3.Connection, name: str) -> tuple[str | None, str | None]:
    """The hash of the planned full list (None: none is planned) and the hash last delivered.

    The sharing actor hashes the list as it streams it; this reads it in one go
    (a whole pass over the list in one request), for tests and tools.
    """
    shid = ledger.sharing_id(conn, name)
    last = conn.execute("SELECT list_hash FROM sharing WHERE id = ?", (shid,)).fetchone()[0]
    lst = ledger.LIST_TABLE.format(shid)
    if not conn.execute("SELECT 1 FROM temp.sqlite_master WHERE name = ?", (lst,)).fetchone():
        return None, last
    h = hashlib.sha256()
    for typ, value, fp in conn.execute(
        f"SELECT i.type, i.value, l.fp FROM {lst} l JOIN indicator i ON i.id = l.iid ORDER BY l.pos"
    ):
        h.update(list_hash_entry(typ, value, fp))
    return h.hexdigest(), last


def chunk(conn: sqlite3.Connection, name: str, after: int, limit: int) -> list[tuple[int, int, str | None, ShareItem]]:
    """Up to ``limit`` entries after position ``after``: ``(position, ledger key, fingerprint, item)``.

    The item carries the indicator's metadata as it is now; the fingerprint is
    the planned one (what the ledger records and the hash covers).
    """
    shid = ledger.sharing_id(conn, name)
    limit = max(1, min(limit, LIST_CHUNK_MAX))
    lst = ledger.LIST_TABLE.format(shid)
    rows = conn.execute(
        f"SELECT l.pos, l.fp, {ledger.ITEM_COLS} FROM {lst} l JOIN indicator i ON i.id = l.iid "
        "WHERE l.pos > ? ORDER BY l.pos LIMIT ?",
        (after, limit),
    ).fetchall()
    out = []
    for row in rows:
        iid, item = ledger._item(row[2:])
        out.append((row[0], iid, row[1], item))
    return out


def find(conn: sqlite3.Connection, name: str, values: Iterable[str]) -> list[tuple[int, ShareItem]]:
    """The entries of the planned list with these values: ``(ledger key, item)`` (for a refusal
    a destination reports by value after the whole list was handed over)."""
    shid = ledger.sharing_id(conn, name)
    wanted = list(dict.fromkeys(values))
    out: list[tuple[int, ShareItem]] = []
    for i in range(0, len(wanted), _LOOKUP):
        part: Sequence[str] = wanted[i : i + _LOOKUP]
        # By (type, value): the indicator's unique index, never a scan of the list.
        pairs = [(t, v) for v in part for t in INDICATOR_TYPES]
        marks = ",".join("(?,?)" for _ in pairs)
        rows = conn.execute(
            f"SELECT {ledger.ITEM_COLS} FROM indicator i WHERE (i.type, i.value) IN (VALUES {marks}) "
            f"AND EXISTS (SELECT 1 FROM {ledger.CAND_TABLE.format(shid)} c WHERE c.iid = i.id AND c.fit)",
            [x for p in pairs for x in p],
        ).fetchall()
        out.extend(ledger._item(r) for r in rows)
    return out
