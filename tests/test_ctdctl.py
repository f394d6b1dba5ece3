"""ctdctl: socket resolution, argument parsing, output formats and exit codes."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import structlog
import trio

from ctd.control.protocol import Peer, Request
from ctd.control.server import serve_control
from ctd.ctdctl.main import ConnectError, ControlClient, build_parser, main, resolve_socket
from ctd.errors import ConfigError, CtdError

SOURCE = {
    "name": "feed1",
    "adapter": "file",
    "pull": True,
    "state": "idle",
    "last_run": "2026-01-02T03:04:05Z",
    "last_success": "2026-01-02T03:04:05Z",
    "last_error": None,
    "next_run": "2026-01-02T04:04:05Z",
    "last_counts": {"new": 3, "updated": 1, "invalid": 2, "retracted": 0, "batches": 1},
    "indicators": 42,
}
STATUS = {
    "version": "0.1.0",
    "pid": 4321,
    "uptime_s": 3723.5,
    "config_path": "/etc/ctd/ctd.toml",
    "config_hash": "abc123",
    "indicators": {
        "total": 42,
        "active": 40,
        "by_type": {"url": {"active": 30, "inactive": 1}, "ipv4": {"active": 10, "inactive": 1}},
    },
    "sources": [SOURCE],
}


def indicator(value: str, *, sources: tuple[str, ...] = ("feed1",), tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "domain",
        "value": value,
        "active": True,
        "allowlisted": False,
        "expires_at": None,
        "first_seen": "2026-01-01T00:00:00Z",
        "last_seen": "2026-01-02T00:00:00Z",
        "reputation": 7,
        "severity": "high",
        "tags": tags or [],
        "comments": "",
        "reference": "",
        "hits": 0,
        "sources": [
            {
                "source": s,
                "first_seen": "2026-01-01T00:00:00Z",
                "last_seen": "2026-01-02T00:00:00Z",
                "reputation": 7,
                "severity": "high",
                "tags": [],
                "comments": "",
                "reference": "",
                "expires_at": None,
                "retracted": False,
            }
            for s in sources
        ],
    }


RULES = [
    {
        "name": "high-domains",
        "filter": "type = 'domain' AND severity >= 'high'",
        "exceptions": ["value ~ '.example.org'", "tag = 'test'"],
        "description": "high severity domains",
        "muted_until": None,
        "muted": False,
        "used_by": ["to-misp", "to-file"],
    },
    {
        "name": "quiet",
        "filter": "type = 'url'",
        "exceptions": [],
        "description": "",
        "muted_until": "2030-01-01T00:00:00+00:00",
        "muted": True,
        "used_by": [],
    },
]
RULE_TEST = {
    "rule": "high-domains",
    "days": 7,
    "muted": False,
    "total": 1200,
    "by_type": {"domain": 1150, "url": 50},
    "bytes": 24000,
    "sample": [{"type": "domain", "value": "evil.example"}],
    "sharing": [
        {
            "name": "to-file",
            "destination": "file1",
            "action": "list",
            "total": 1200,
            "by_type": {"domain": 1150, "url": 50},
            "bytes": 24000,
            "max_entries": 1000,
            "max_bytes": None,
            "warnings": ["1200 entries exceed the destination limit of 1000: the oldest 200 would not be shared"],
        }
    ],
    "warnings": ["to-file: 1200 entries exceed the destination limit of 1000: the oldest 200 would not be shared"],
}
SHARING = {
    "name": "to-file",
    "sources": ["feed1"],
    "rule": "high-domains",
    "destination": "file1",
    "action": "list",
    "state": "idle",
    "last_run": "2026-01-02T03:04:05Z",
    "last_success": "2026-01-02T03:04:05Z",
    "last_error": "destination timed out",
    "next_run": "2026-01-02T03:05:05Z",
    "last_result": {
        "sharing": "to-file",
        "candidates": 12,
        "pushed": 10,
        "rejected": 0,
        "retracted": 1,
        "unshared": 2,
        "unchanged": False,
        "muted": False,
        "error": None,
    },
    "counts": {"pending": 4, "shared": 1234, "failed": 3, "retract_pending": 1, "retracted": 56, "unshared": 7},
}
DELIVERIES = [
    {
        "sharing": "to-file",
        "state": "shared",
        "error": None,
        "updated_at": "2026-01-02T03:04:05Z",
        "shared_at": "2026-01-02T03:04:05Z",
    },
    {
        "sharing": "to-misp",
        "state": "failed",
        "error": "HTTP 500",
        "updated_at": "2026-01-02T03:04:05Z",
        "shared_at": None,
    },
]
SHARING_SHOW = {
    **SHARING,
    "interval_s": 300.0,
    "params": {"path": "/var/lib/ctd/out.txt"},
    "problems": [
        {"type": "domain", "value": "old.example", "state": "unshared", "error": "over limit", "updated_at": 1767323045}
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
                return {
                    "source": a["source"],
                    "new": 5,
                    "updated": 0,
                    "invalid": 0,
                    "retracted": 0,
                    "batches": 1,
                    "duration_s": 0.5,
                    "error": "feed unreachable" if a["source"] == "broken" else None,
                }
            case "reload":
                raise CtdError("config rejected: bad key - at $.plugins.x")
            case "indicators.show":
                if a["value"] == "shared.example":
                    return [{**indicator(a["value"]), "deliveries": DELIVERIES}]
                return [indicator(a["value"])] if a["value"] == "evil.example" else []
            case "indicators.search":
                return [indicator("evil.example"), indicator("bad.example", sources=("feed1", "feed2"))]
            case "indicators.export":
                return self._export()
            case "rules.list":
                return RULES
            case "rules.test":
                if a["name"] == "missing":
                    raise ConfigError("no rule named 'missing'")
                return RULE_TEST
            case "sharing.list":
                return [SHARING]
            case "sharing.show":
                return SHARING_SHOW
            case "sharing.sync":
                return {
                    "sharing": a["name"],
                    "candidates": 12,
                    "pushed": 9,
                    "rejected": 1,
                    "retracted": 2,
                    "unshared": 0,
                    "unchanged": False,
                    "muted": False,
                    "error": "destination refused: 503" if a["name"] in ("broken", "waiting") else None,
                    "deferred": a["name"] == "waiting",
                    "next_attempt": "2026-01-02T03:09:05Z" if a["name"] == "waiting" else None,
                }
            case _:
                raise CtdError(f"unknown command {request.cmd}")

    async def _export(self) -> AsyncIterator[dict[str, Any]]:
        yield indicator("evil.example", tags=["c2", "apt"])
        yield indicator("bad.example", sources=("feed1", "feed2"))


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
    for text in (
        "0.1.0",
        "4321",
        "1h 2m 3s",
        "/etc/ctd/ctd.toml",
        "abc123",
        "42 total, 40 active",
        "ipv4",
        "feed1",
        "2026-01-02T04:04:05Z",
    ):
        assert text in out


async def test_status_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json status` prints the daemon's data as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "status") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


async def test_json_flag_after_subcommand(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
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


async def test_show_not_found_exits_4(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators show` of an unknown value exits 4 (not found) with 'no indicator VALUE'."""
    assert await ctdctl("--socket", sock_path, "indicators", "show", "nice.example") == 4
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
    assert daemon.requests[-1].args == {"type": None, "source": None, "active": True}
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["value"] for r in rows] == ["evil.example", "bad.example"]


async def test_export_csv(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators export --format csv` writes the header and ;-joined sources and tags."""
    assert await ctdctl("--socket", sock_path, "indicators", "export", "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == [
        "type",
        "value",
        "active",
        "severity",
        "reputation",
        "first_seen",
        "last_seen",
        "expires_at",
        "sources",
        "tags",
    ]
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
    for cmd in ("status", "sources", "sync", "reload", "indicators", "rules", "sharing"):
        assert cmd in out


def test_help_lists_rules_and_sharing_actions(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules --help` and `sharing --help` list their actions."""
    for argv, actions in ((["rules", "--help"], ("list", "test")), (["sharing", "--help"], ("list", "show", "sync"))):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        out = capsys.readouterr().out
        for action in actions:
            assert action in out


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


# --- rules and sharing --------------------------------------------------------


async def test_rules_list_request_and_table(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules list` sends rules.list with no args and prints name, mute, users and filter."""
    assert await ctdctl("--socket", sock_path, "rules", "list") == 0
    assert (daemon.requests[-1].cmd, daemon.requests[-1].args) == ("rules.list", {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "MUTED", "USED_BY", "FILTER"]
    assert "high-domains" in lines[1] and "to-misp,to-file" in lines[1] and "type = 'domain'" in lines[1]
    assert "until 2030-01-01T00:00:00+00:00" in lines[-1]


async def test_rules_list_exceptions_indented(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules list` prints each exception on its own line under the FILTER column."""
    assert await ctdctl("--socket", sock_path, "rules", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].strip() == "except: value ~ '.example.org'"
    assert lines[3].strip() == "except: tag = 'test'"
    assert lines[2].index("except:") == lines[0].index("FILTER")


async def test_rules_list_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json rules list` prints the daemon's data as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "rules", "list") == 0
    assert json.loads(capsys.readouterr().out) == RULES


async def test_rules_test_request_and_summary(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test NAME --days N` sends name and days and prints totals, types, sample and limits."""
    assert await ctdctl("--socket", sock_path, "rules", "test", "high-domains", "--days", "7") == 0
    assert (daemon.requests[-1].cmd, daemon.requests[-1].args) == ("rules.test", {"name": "high-domains", "days": 7})
    out = capsys.readouterr().out
    assert "rule high-domains would select 1200 IoCs" in out and "24000 bytes serialised" in out
    assert "domain  1150" in out
    assert "sample:" in out and "evil.example" in out
    assert "sharing to-file -> file1 (list): 1200 IoCs (limit 1000), 24000 bytes (limit none)" in out


async def test_rules_test_days_default_null(daemon: FakeDaemon, sock_path: str) -> None:
    """`rules test NAME` without --days sends days null."""
    assert await ctdctl("--socket", sock_path, "rules", "test", "high-domains") == 0
    assert daemon.requests[-1].args == {"name": "high-domains", "days": None}


async def test_rules_test_warnings_and_dry_run(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test` prints each warning prefixed `warning:`, ends with 'nothing was sent' and exits 0."""
    assert await ctdctl("--socket", sock_path, "rules", "test", "high-domains") == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "warning: to-file: 1200 entries exceed the destination limit of 1000: "
        "the oldest 200 would not be shared" in lines
    )
    assert lines[-1] == "dry run: nothing was sent"


async def test_rules_test_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json rules test` prints the daemon's data as valid JSON."""
    assert await ctdctl("--socket", sock_path, "rules", "test", "high-domains", "--json") == 0
    assert json.loads(capsys.readouterr().out) == RULE_TEST


async def test_rules_test_unknown_rule_exits_2(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test` of an unknown rule exits 2 with the daemon's message."""
    assert await ctdctl("--socket", sock_path, "rules", "test", "missing") == 2
    assert "no rule named 'missing'" in capsys.readouterr().err


async def test_sharing_list_request_and_table(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sharing list` sends sharing.list and prints one aligned row with the ledger counts."""
    assert await ctdctl("--socket", sock_path, "sharing", "list") == 0
    assert (daemon.requests[-1].cmd, daemon.requests[-1].args) == ("sharing.list", {})
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "NAME",
        "RULE",
        "DESTINATION",
        "ACTION",
        "STATE",
        "LAST_RUN",
        "SHARED",
        "PENDING",
        "FAILED",
        "RETRACTED",
        "UNSHARED",
        "LAST_ERROR",
    ]
    assert header.index("SHARED") == row.index("1234")
    assert header.index("RETRACTED") == row.index("56")
    assert row.endswith("destination timed out")


async def test_sharing_list_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json sharing list` prints the daemon's data as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "sharing", "list") == 0
    assert json.loads(capsys.readouterr().out) == [SHARING]


async def test_sharing_show_request_and_output(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sharing show NAME` sends the name and prints facts, params, counts and the problems table."""
    assert await ctdctl("--socket", sock_path, "sharing", "show", "to-file") == 0
    assert (daemon.requests[-1].cmd, daemon.requests[-1].args) == ("sharing.show", {"name": "to-file"})
    out = capsys.readouterr().out
    for text in (
        "to-file",
        "high-domains",
        "file1",
        "path=/var/lib/ctd/out.txt",
        "5m 0s",
        "destination timed out",
        "pushed 10",
        "RETRACT_PENDING",
        "1234",
    ):
        assert text in out
    assert "old.example" in out and "unshared  over limit" in out
    assert "2026-01-02T03:04:05Z" in out.splitlines()[-1]  # updated_at epoch rendered as ISO


async def test_sharing_show_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json sharing show` prints the daemon's data as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "sharing", "show", "to-file") == 0
    assert json.loads(capsys.readouterr().out) == SHARING_SHOW


async def test_sharing_sync_request_and_counts(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sharing sync NAME --days N` sends name and days and prints the pass counts."""
    assert await ctdctl("--socket", sock_path, "sharing", "sync", "to-file", "--days", "3") == 0
    assert (daemon.requests[-1].cmd, daemon.requests[-1].args) == ("sharing.sync", {"name": "to-file", "days": 3})
    out = capsys.readouterr().out
    for key in ("sharing", "candidates", "pushed", "rejected", "retracted", "unshared"):
        assert key in out
    assert "to-file" in out


async def test_sharing_sync_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json sharing sync` prints the pass result as valid JSON."""
    assert await ctdctl("--json", "--socket", sock_path, "sharing", "sync", "to-file") == 0
    assert json.loads(capsys.readouterr().out)["pushed"] == 9


async def test_sharing_sync_with_error_exits_2(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sharing sync` exits 2 and prints the error when the pass failed."""
    assert await ctdctl("--socket", sock_path, "sharing", "sync", "broken") == 2
    assert "destination refused: 503" in capsys.readouterr().err


async def test_sharing_sync_in_backoff_exits_2_with_the_next_attempt(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sharing sync` of a sharing in backoff exits 2 saying it did not run, why, and when the next attempt is."""
    assert await ctdctl("--socket", sock_path, "sharing", "sync", "waiting") == 2
    err = capsys.readouterr().err
    assert "not run" in err and "destination refused: 503" in err and "2026-01-02T03:09:05Z" in err


async def test_show_delivery_table(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators show` prints a DELIVERY table of the indicator's deliveries."""
    assert await ctdctl("--socket", sock_path, "indicators", "show", "shared.example") == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("DELIVERY"))
    assert lines[header].split() == ["DELIVERY", "STATE", "SHARED_AT", "UPDATED_AT", "ERROR"]
    assert lines[header + 1].split()[:2] == ["to-file", "shared"]
    assert lines[header + 2].split()[:2] == ["to-misp", "failed"] and lines[header + 2].endswith("HTTP 500")


async def test_show_no_deliveries_no_table(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`indicators show` omits the DELIVERY table when there are no deliveries."""
    assert await ctdctl("--socket", sock_path, "indicators", "show", "evil.example") == 0
    assert "DELIVERY" not in capsys.readouterr().out
