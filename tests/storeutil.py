"""Helpers for driving the store's SQLite backend directly in tests (seeding, reading back)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ctd.model import Sighting
from ctd.store import IngestBatch, IngestResult, to_stage_rows
from ctd.store import query as store_query
from ctd.store import sql as store_sql

NOW = 1_800_000_000  # a fixed "now" (2027-01-15)
DAY = 86400


def ingest(
    conn: sqlite3.Connection,
    source: str,
    sightings: list[Sighting],
    *,
    now: int = NOW,
    policy: str = "last_seen",
    aging_days: int = 90,
    reputation: int | None = None,
    tags: tuple[str, ...] = (),
    allowlisted: Any = None,
    warninglisted: Any = None,
    warninglist_tag: bool = False,
    fresh: bool = True,
    snapshot_end: bool = False,
    sub: dict | None = None,
    rejected: tuple[tuple[str, str, str], ...] = (),
) -> IngestResult:
    rows = to_stage_rows(
        sightings,
        now=now,
        reputation=reputation,
        extra_tags=tags,
        allowlisted=allowlisted,
        warninglisted=warninglisted,
        warninglist_tag=warninglist_tag,
    )
    return store_sql.ingest(
        conn,
        IngestBatch(
            source=source,
            rows=rows,
            policy=policy,
            aging_days=aging_days,
            now=now,
            fresh=fresh,
            snapshot_end=snapshot_end,
            sub=sub,
            cursor=None,
            rejected=rejected,
        ),
    )


def show(conn: sqlite3.Connection, typ: str, value: str) -> dict[str, Any]:
    found = store_query.show(conn, [(typ, value)], value)
    assert len(found) == 1, found
    return found[0]


def s(value: str, typ: str = "domain", **kw: Any) -> Sighting:
    return Sighting(type=typ, value=value, **kw)
