"""ctdctl: socket resolution, argument parsing, output formats and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest
import structlog
import trio

from ctd.control import serve_control
from ctd.ctdctl import ControlClient, ConnectError, build_parser, main, resolve_socket
from ctd.errors import ConfigError, CtdError
from ctd.protocol import Peer, Request

SOURCE = {
    "name": "feed1", "adapter": "file", "pull": True, "state": "idle",
    "last_run": "2026-01-02T03:04:05Z", "last_success": "2026-01-02T03:04:05Z",
    "last_error": None, "next_run": "2026-01-02T04:04:05Z",
    "last_counts": {"new": 3, "updated": 1, "invalid": 2, "retracted": 0, "batches": 1},
    "indicators": 42,
}
STATUS = {
    "version": "0.1.0", "pid": 4321, "uptime_s": 3723.5,
    "config_path": "/etc/ctd/ctd.toml", "config_hash": "abc123",
    "indicators": {"total": 42, "active": 40,
                   "by_type": {"url": {"active": 30, "inactive": 1}, "ipv4": {"active": 10, "inactive": 1}}},
    "sources": [SOURCE],
}


def indicator(value: str, *, sources: tuple[str, ...] = ("feed1",), tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "domain", "value": value, "active": True, "allowlisted": False,
        "expires_at": None, "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-02T00:00:00Z",
        "reputation": 7, "severity": "high", "tags": tags or [], "comments": "", "reference": "",
        "hits": 0,
        "sources": [
            {"source": s, "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-02T00:00:00Z",
             "reputation": 7, "severity": "high", "tags": [], "comments": "", "reference": "",
             "expires_at": None, "retracted": False}
            for s in sources
        ],
    }


class FakeDaemon:
    """Answers ctdctl commands with canned data; records the requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request, peer: Peer) -> Any:
        self.requests.append(request)
        a = request.args
        match request.cmd:
            case "status":
                return STATUS
            case "sources":
                return [SOURCE]
            case "sync":
                if a["source"] == "missing":
                    raise ConfigError(f"no source named {a['source']!r}")
                return {"source": a["source"], "new": 5, "updated": 0, "invalid": 0, "retracted": 0,
                        "batches": 1, "duration_s": 0.5,
                        "error": "feed unreachable" if a["source"] == "broken" else None}
            case "reload":
                raise CtdError("config rejected: bad key - at $.plugins.x")
            case "indicators.show":
                return [indicator(a["value"])] if a["value"] == "evil.example" else []
            case "indicators.search":
                return [indicator("evil.example"), indicator("bad.example", sources=("feed1", "feed2"))]
            case "indicators.export":
                return self._export()
            case _:
                raise CtdError(f"unknown command {request.cmd}")

    async def _export(self) -> AsyncIterator[dict[str, Any]]:
        yield indicator("evil.example", tags=["c2", "apt"])
        yield indicator("bad.example", sources=("feed1", "feed2"))


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ctdc", dir="/tmp")
    yield os.path.join(d, "ctd.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def daemon(nursery: trio.Nursery, sock_path: str) -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon()
    # The server logs; keep its lines out of the captured ctdctl stdout.
    with structlog.testing.capture_logs():
        await nursery.start(partial(serve_control, sock_path, fake))
        yield fake


async def ctdctl(*argv: str) -> int:
    return await trio.to_thread.run_sync(lambda: main(list(argv)))


async def test_status_human(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`status` prints version, pid, config, counts by type and the sources."""
    assert await ctdctl("--socket", sock_path, "status") == 0
    out = capsys.readouterr().out
    for text in ("0.1.0", "4321", "1h 2m 3s", "/etc/ctd/ctd.toml", "abc123",
                 "42 total, 40 active", "ipv4", "feed1", "2026-01-02T04:04:05Z"):
        assert text in out


async def test_status_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json status` prints the daemon's data as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "status") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


async def test_json_flag_after_subcommand(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` and `--socket` are also accepted after the subcommand."""
    assert await ctdctl("sources", "--socket", sock_path, "--json") == 0
    assert json.loads(capsys.readouterr().out) == [SOURCE]


async def test_sources_table_aligned(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`sources` prints a header and rows whose columns line up."""
    assert await ctdctl("--socket", sock_path, "sources") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.index("ADAPTER") == row.index("file")
    assert header.index("INDICATORS") == row.index("42")


async def test_sync_ok(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`sync SOURCE` sends the source name and prints the counts."""
    assert await ctdctl("--socket", sock_path, "sync", "feed1") == 0
    assert daemon.requests[-1].args == {"source": "feed1"}
    assert "new" in capsys.readouterr().out


async def test_sync_with_error_exits_2(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`sync` exits 2 and prints the error when the pull failed."""
    assert await ctdctl("--socket", sock_path, "sync", "broken") == 2
    assert "feed unreachable" in capsys.readouterr().err


async def test_daemon_error_exits_2(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An error reply exits 2 with the daemon's message on stderr."""
    assert await ctdctl("--socket", sock_path, "reload") == 2
    assert "config rejected: bad key - at $.plugins.x" in capsys.readouterr().err


async def test_connection_refused_exits_1(sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A socket nobody listens on exits 1 with a one-line hint."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    assert await ctdctl("--socket", sock_path, "status") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot connect to {sock_path}: Connection refused" in err
    assert "is the daemon running?" in err


async def test_missing_socket_exits_1(sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing socket exits 1 and names --socket and $CTD_SOCKET."""
    assert await ctdctl("--socket", sock_path, "status") == 1
    assert "No such file or directory" in capsys.readouterr().err


async def test_show_found(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators show` prints the indicator and a sources table."""
    assert await ctdctl("--socket", sock_path, "indicators", "show", "evil.example", "--type", "domain") == 0
    assert daemon.requests[-1].args == {"value": "evil.example", "type": "domain"}
    out = capsys.readouterr().out
    assert "evil.example" in out
    assert "SOURCE" in out and "feed1" in out


async def test_show_not_found_exits_1(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators show` of an unknown value exits 1 with 'no indicator VALUE'."""
    assert await ctdctl("--socket", sock_path, "indicators", "show", "nice.example") == 1
    assert "no indicator nice.example" in capsys.readouterr().err


async def test_search_args_and_table(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators search` sends its filters and prints one row per indicator."""
    assert await ctdctl("--socket", sock_path, "indicators", "search", "--source", "feed1", "--inactive") == 0
    assert daemon.requests[-1].args == {"type": None, "source": "feed1", "active": False, "limit": 100}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TYPE", "VALUE", "ACTIVE", "SEVERITY", "REPUTATION", "LAST_SEEN", "SOURCES"]
    assert lines[2].split()[-1] == "feed1,feed2"


async def test_export_jsonl(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators export` writes one JSON object per line by default."""
    assert await ctdctl("--socket", sock_path, "indicators", "export", "--active") == 0
    assert daemon.requests[-1].args == {"type": None, "active": True}
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["value"] for r in rows] == ["evil.example", "bad.example"]


async def test_export_csv(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators export --format csv` writes the header and ;-joined sources and tags."""
    assert await ctdctl("--socket", sock_path, "indicators", "export", "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["type", "value", "active", "severity", "reputation",
                             "first_seen", "last_seen", "expires_at", "sources", "tags"]
    assert (rows[0]["tags"], rows[0]["active"], rows[0]["expires_at"]) == ("c2;apt", "true", "")
    assert rows[1]["sources"] == "feed1;feed2"


async def test_stream_client_yields_items(daemon: FakeDaemon, sock_path: str) -> None:
    """ControlClient.stream yields the decoded items of a streaming command."""
    items = await trio.to_thread.run_sync(
        lambda: list(ControlClient(sock_path).stream("indicators.export", type=None, active=None))
    )
    assert len(items) == 2


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`ctdctl --help` lists every subcommand."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for cmd in ("status", "sources", "sync", "reload", "indicators"):
        assert cmd in out


def test_active_and_inactive_are_exclusive() -> None:
    """--active and --inactive cannot be combined."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["indicators", "search", "--active", "--inactive"])


def test_socket_flag_wins() -> None:
    """--socket beats $CTD_SOCKET and the config."""
    assert resolve_socket("/a.sock", "/nope.toml", {"CTD_SOCKET": "/b.sock"}) == "/a.sock"


def test_socket_from_env() -> None:
    """$CTD_SOCKET is used when --socket is absent."""
    assert resolve_socket(None, None, {"CTD_SOCKET": "/b.sock"}) == "/b.sock"


def test_socket_from_config(tmp_path: Any) -> None:
    """[daemon].socket of the --config file is used next."""
    cfg = tmp_path / "ctd.toml"
    cfg.write_text('[daemon]\nsocket = "/srv/ctd.sock"\n')
    assert resolve_socket(None, str(cfg), {}) == "/srv/ctd.sock"
    assert resolve_socket(None, None, {"CTD_CONFIG": str(cfg)}) == "/srv/ctd.sock"


def test_socket_default_when_config_has_none(tmp_path: Any) -> None:
    """A config without [daemon].socket, or no config at all, gives /run/ctd/ctd.sock."""
    cfg = tmp_path / "ctd.toml"
    cfg.write_text("[daemon]\n")
    assert resolve_socket(None, str(cfg), {}) == "/run/ctd/ctd.sock"
    assert resolve_socket(None, None, {}) == "/run/ctd/ctd.sock"


def test_unreadable_config_is_connect_error(tmp_path: Any) -> None:
    """A --config that cannot be read is reported, not ignored."""
    with pytest.raises(ConnectError, match="cannot read config"):
        resolve_socket(None, str(tmp_path / "missing.toml"), {})
