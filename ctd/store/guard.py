"""Re-applying a source's warning-list guard to what the store already holds (SQLite backend).

A plugin's guard (``warninglists``, ``warninglist_action``) flags each report as it
is ingested (``ctd.store.rows.to_stage_rows``). When the guard changes — other
lists, another action, a newer list package — the reports already stored were
flagged by the old one: a source that reports each value once (an RSS entry,
an article) would keep the old verdict until the value aged out. So the source
actor hands the store its guard's signature before the first pull; when it
differs from the one recorded for the source, every report of that source is
checked again, like the allowlist on reload.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import msgspec

from ctd.store.changes import bump_for
from ctd.store.rows import WARNINGLIST_TAG
from ctd.store.sql import _refresh_ids, source_id, transaction

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(list[str])
OFF = "off"


def _retag(tags: str, hit: str, tag: bool) -> str:
    """A report's tags with its ``warninglist:`` tag replaced by the current verdict's."""
    kept = [t for t in _dec.decode(tags) if not t.startswith(WARNINGLIST_TAG)]
    if hit and tag:
        kept.append(WARNINGLIST_TAG + hit)
    return _enc.encode(sorted(set(kept))).decode()


def apply_guard(
    conn: sqlite3.Connection,
    source: str,
    signature: str,
    warninglisted: Callable[[str, str], str | None] | None,
    tag: bool,
    now: int,
) -> int | None:
    """Re-flag ``source``'s reports if its guard changed; how many changed (None: the guard is unchanged)."""
    sid = source_id(conn, source)
    old = conn.execute("SELECT guard FROM source WHERE id = ?", (sid,)).fetchone()[0]
    if old == signature:
        return None
    changes: list[tuple[str, int, str, int, int]] = []
    if not (warninglisted is None and old in (None, OFF)):  # off before and now: nothing is flagged
        for iid, typ, value, flag, hold, tags in conn.execute(
            "SELECT s.iid, i.type, i.value, s.warninglist, s.wl_hold, s.tags "
            "FROM sighting s JOIN indicator i ON i.id = s.iid WHERE s.sid = ?",
            (sid,),
        ):
            hit = (warninglisted(typ, value) or "") if warninglisted is not None else ""
            new_hold = 1 if hit and not tag else 0
            new_tags = _retag(tags, hit, tag) if (hit and tag) or WARNINGLIST_TAG in tags else tags
            if (hit, new_hold, new_tags) != (flag, hold, tags):
                changes.append((hit, new_hold, new_tags, iid, sid))
    with transaction(conn):
        if changes:
            conn.executemany(
                "UPDATE sighting SET warninglist = ?, wl_hold = ?, tags = ? WHERE iid = ? AND sid = ?", changes
            )
            _refresh_ids(conn, [c[3] for c in changes], now)
            bump_for(conn, [c[3] for c in changes])
        conn.execute("UPDATE source SET guard = ? WHERE id = ?", (signature, sid))
    return len(changes)
