"""A StoreClient stand-in that runs the real SQL inline (no thread), for virtual-time tests."""

from __future__ import annotations

from typing import Any

import trio

from ctd.store import sql as store_sql


class FakeStore:
    def __init__(self, path: str) -> None:
        self.conn = store_sql.connect(path)
        self.ingests: list[dict[str, Any]] = []

    async def ingest(self, **kw: Any) -> store_sql.IngestResult:
        await trio.lowlevel.checkpoint()
        self.ingests.append(kw)
        return store_sql.ingest(self.conn, **kw)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(self.conn, *args, **kwargs)

    def close(self) -> None:
        self.conn.close()
