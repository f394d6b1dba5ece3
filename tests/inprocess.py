"""The daemon inside a test's own task tree, observed through events rather than by polling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ctd.config import load_config
from ctd.daemon.daemon import Daemon
from ctd.service.sdnotify import Notifier
from tests.fake_adapters import Fakes


class ReadyNotifier(Notifier):
    """Tells the test, instead of systemd, that the daemon is ready (every actor started)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.is_ready = trio.Event()

    def ready(self, status: str | None = None) -> bool:
        self.is_ready.set()
        return super().ready(status)


@asynccontextmanager
async def running(cfg_path: Path, fakes: Fakes) -> AsyncIterator[Daemon]:
    """The daemon on ``cfg_path`` (with this test's fakes), once it is ready; cancelled on exit."""
    notifier = ReadyNotifier()
    daemon = Daemon(load_config(cfg_path), notifier, open_adapter=fakes.open_adapter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.run)
        with trio.fail_after(20):  # a guard only: a daemon that never gets ready fails the test
            await notifier.is_ready.wait()
        yield daemon
        nursery.cancel_scope.cancel()
