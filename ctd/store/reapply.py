"""Plugin-level values (``tags``, ``reputation``) re-applied to what one pull cycle committed.

A reload that changes a source's plugin-level values while a pull is half done
restarts the source actor, which resumes the pull (a pull cannot always start
over: a tenant-side iterator has moved on). The batches committed before the
reload carry the old values; at the end of the resumed pull the source actor
asks for the current ones to be applied to every sighting this cycle committed
(those of the source's current snapshot generation), in one transaction with
the effective metadata of the indicators they belong to.
"""

from __future__ import annotations

import sqlite3

import msgspec

from ctd.store import changes
from ctd.store.requests import ReapplyPluginValues
from ctd.store.sql import _refresh_ids, source_id, transaction

# Tags stay a sorted, distinct JSON list (as ``to_stage_rows`` writes them): the old plugin
# tags out, the current ones in.
_SQL = """
UPDATE sighting SET
    tags = (SELECT coalesce(json_group_array(v), '[]') FROM (
        SELECT DISTINCT v FROM (
            SELECT j.value AS v FROM json_each(sighting.tags) j
            WHERE j.value NOT IN (SELECT value FROM json_each(:dropped))
            UNION SELECT value FROM json_each(:added))
        ORDER BY v)),
    reputation = coalesce(:reputation, reputation)
WHERE sid = :sid AND gen = (SELECT gen FROM source WHERE id = :sid)
RETURNING iid
"""

_enc = msgspec.json.Encoder()


def reapply_plugin_values(conn: sqlite3.Connection, req: ReapplyPluginValues) -> int:
    """Apply ``req``'s tags and reputation to the source's sightings of this cycle; how many changed."""
    sid = source_id(conn, req.source)
    with transaction(conn):
        ids = [
            r[0]
            for r in conn.execute(
                _SQL,
                {
                    "sid": sid,
                    "dropped": _enc.encode(sorted(req.dropped)).decode(),
                    "added": _enc.encode(sorted(req.tags)).decode(),
                    "reputation": req.reputation,
                },
            )
        ]
        _refresh_ids(conn, ids, req.now)
        changes.bump_for(conn, ids)
    return len(ids)
