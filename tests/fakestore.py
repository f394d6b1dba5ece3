"""A Store that performs each request inline on the real SQLite backend (no thread), for virtual-time tests."""

from __future__ import annotations

from typing import Any

import trio

from ctd.store import Store, StoreStatistics, engine


class FakeStore(Store):
    """The store API over ``engine.execute`` in the calling task; ``conn`` is there for test setup."""

    def __init__(self, path: str) -> None:
        self.conn = engine.connect(path)
        self.handled = 0

    async def _execute(self, request: Any) -> Any:
        await trio.lowlevel.checkpoint()
        self.handled += 1
        return engine.execute(self.conn, request)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(queued=0, handled=self.handled, busy_seconds=0.0)

    def engine_versions(self) -> dict[str, str]:
        return dict(engine.ENGINE_VERSIONS)

    def close(self) -> None:
        self.conn.close()
