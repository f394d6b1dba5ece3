"""Foreground logs: a console format on a terminal, JSON elsewhere; read-only commands at debug (issue 13)."""

from __future__ import annotations

import io
import os
import re

import pytest
import structlog
import trio

from ctd.control.access import AccessPolicy
from ctd.control.commands import Commands
from ctd.control.protocol import Peer, Request
from ctd.control.server import _answer
from ctd.service import logs

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def tty():
    """A real terminal: the slave end of a pty as a text stream, and a reader of what was written to it."""
    master, slave = os.openpty()
    stream = open(slave, "w", buffering=1, closefd=True)

    def written() -> str:
        stream.flush()
        return os.read(master, 65536).decode()

    yield stream, written
    stream.close()
    os.close(master)
    structlog.reset_defaults()  # other tests capture with structlog's defaults (every level)


@pytest.fixture(autouse=True)
def _restore_structlog():
    yield
    structlog.reset_defaults()


def emit_one(stream) -> None:
    logs.configure_logging("info", stream)
    structlog.get_logger("ctd.daemon").info("daemon ready", ctd_event="daemon_ready", sources=3, token="s3cret-value")


def test_terminal_gets_one_readable_line(tty, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal an entry is one human line (not JSON), secrets still redacted."""
    stream, written = tty
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("CTD_LOG_FORMAT", raising=False)
    emit_one(stream)
    [line] = written().strip().splitlines()
    assert not line.startswith("{") and "daemon ready" in line and "sources=3" in line and "[info" in line
    assert "s3cret" not in line and "***" in line
    assert not ANSI.search(line)  # NO_COLOR honoured


def test_colours_only_where_the_terminal_has_them(tty, monkeypatch: pytest.MonkeyPatch) -> None:
    """Colours on a colour terminal; none on TERM=dumb or with NO_COLOR; none off a terminal."""
    stream, written = tty
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("CTD_LOG_FORMAT", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    emit_one(stream)
    assert ANSI.search(written())
    monkeypatch.setenv("TERM", "dumb")
    emit_one(stream)
    assert not ANSI.search(written())
    assert not logs.colours_wanted(io.StringIO(), {"TERM": "xterm"})
    assert not logs.colours_wanted(stream, {"TERM": "xterm", "NO_COLOR": ""})


def test_not_a_terminal_gets_json_and_the_format_can_be_forced(tty, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe or file gets JSON lines; $CTD_LOG_FORMAT=json/console overrides the terminal test."""
    stream, written = tty
    monkeypatch.delenv("CTD_LOG_FORMAT", raising=False)
    out = io.StringIO()
    emit_one(out)
    assert out.getvalue().startswith('{"ts":')
    monkeypatch.setenv("CTD_LOG_FORMAT", "json")
    emit_one(stream)
    assert written().lstrip().startswith('{"ts":')
    monkeypatch.setenv("CTD_LOG_FORMAT", "console")
    out = io.StringIO()
    emit_one(out)
    assert "daemon ready" in out.getvalue() and not out.getvalue().startswith("{")


class _View:
    config = None


async def test_read_commands_are_audited_at_debug_admin_at_info() -> None:
    """`status` and friends log control_command at debug; reload and other admin commands stay at info."""
    commands = Commands(_View(), AccessPolicy(None, None))  # type: ignore[arg-type]
    peer = Peer(pid=1, uid=os.getuid(), gid=os.getgid())

    async def dispatch(request: Request, peer: Peer) -> dict:
        return {}

    async def send(data) -> None:
        pass

    logs.configure_logging("debug", io.StringIO())  # let debug entries through to the capture
    with structlog.testing.capture_logs() as captured:
        for cmd in ("status", "sources", "indicators.search", "reload", "indicators.retract"):
            await _answer(Request(1, cmd), peer, dispatch, send, commands.is_read(cmd))
    levels = {e["cmd"]: e["log_level"] for e in captured if e.get("ctd_event") == "control_command"}
    assert levels == {
        "status": "debug",
        "sources": "debug",
        "indicators.search": "debug",
        "reload": "info",
        "indicators.retract": "info",
    }
    structlog.reset_defaults()
    await trio.lowlevel.checkpoint()
