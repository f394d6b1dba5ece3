"""`ctdctl sync SOURCE` shows the pull's progress while it waits: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json
from functools import partial
from typing import Any

import pytest
import structlog
import trio

from ctd.control.protocol import Peer, Request
from ctd.control.server import serve_control
from ctd.ctdctl import progress
from ctd.ctdctl.main import main

PROGRESS = {"records": 2000, "records_per_s": 100.0, "bytes_read": 4096, "percent": 40.0, "eta_s": 30.0}
RESULT = {"source": "feed1", "new": 5, "updated": 0, "invalid": 0, "retracted": 0, "batches": 1, "duration_s": 20.0}


class Syncing:
    """`sync` answers only after ctdctl has polled the source's progress twice (without counts)."""

    def __init__(self) -> None:
        self.polls: list[dict[str, Any]] = []
        self.polled = trio.Event()

    async def __call__(self, request: Request, peer: Peer) -> Any:
        if request.cmd == "sources":
            self.polls.append(request.args)
            if len(self.polls) >= 2:
                self.polled.set()
            return [{"name": "other"}, {"name": "feed1", "state": "pulling", "progress": PROGRESS}]
        assert request.cmd == "sync"
        await self.polled.wait()
        return RESULT


@pytest.fixture
async def daemon(nursery, sock_path: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.01)
    fake = Syncing()
    with structlog.testing.capture_logs():
        await nursery.start(partial(serve_control, sock_path, fake))
        yield fake


async def test_sync_prints_plain_progress_lines_off_a_terminal(daemon, sock_path, capsys) -> None:
    """Off a terminal, sync writes plain progress lines to stderr while it waits, then the counts."""
    assert await trio.to_thread.run_sync(main, ["--socket", sock_path, "sync", "feed1"]) == 0
    out, err = capsys.readouterr()
    assert all(p == {"counts": False} for p in daemon.polls)  # the poll reads no table
    assert "ctdctl: sync feed1: 40% (2000 records), ETA 30s" in err.splitlines()
    assert "\r" not in err and "new" in out


async def test_sync_json_shows_no_progress(daemon, sock_path, capsys) -> None:
    """With --json nothing but the result is printed (the daemon is not polled)."""
    daemon.polled.set()
    assert await trio.to_thread.run_sync(main, ["--json", "--socket", sock_path, "sync", "feed1"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == RESULT and err == "" and daemon.polls == []


def test_terminal_bar_is_redrawn_in_place_and_cleared() -> None:
    """On a terminal the bar redraws one line (carriage return, erase) and is cleared before the result."""
    err = io.StringIO()
    shown = progress.SyncProgress("feed1", lambda: [{"name": "feed1", "progress": PROGRESS}], err, tty=True)
    shown.tick()
    shown.tick()
    shown.done()
    text = err.getvalue()
    assert text.count("\r\x1b[K") == 3 and "\n" not in text
    assert "feed1  [##########--------------]   40%  2000 records  4.0 KiB  100/s  ETA 30s" in text
    assert shown.interval == progress.TTY_INTERVAL
