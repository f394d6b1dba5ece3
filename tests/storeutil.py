"""Helpers for driving the store's SQLite backend directly in tests (seeding, reading back)."""

from __future__ import annotations

import sqlite3
from typing import Any

from msgspec.structs import replace

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
    gate: bool = True,
    rejected: tuple[tuple[str, str, str], ...] = (),
) -> IngestResult:
    """Ingest ``sightings`` as the source actor does; ``gate=False`` stores them as an older ctd did,
    without the value gate of ``to_stage_rows`` (to seed values that reached the store before it)."""
    staged = sightings if gate else [replace(x, type="domain", value="placeholder.example") for x in sightings]
    rows = to_stage_rows(
        staged,
        now=now,
        reputation=reputation,
        extra_tags=tags,
        allowlisted=allowlisted,
        warninglisted=warninglisted,
        warninglist_tag=warninglist_tag,
    )
    if not gate:  # then each value as given, as an older ctd staged it (allowlist and guard saw the placeholder)
        rows = [(x.type, x.value, *row[2:]) for x, row in zip(sightings, rows, strict=True)]
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
