"""ctdctl operator commands: checkpoint, plugins, retract, mute, stats, version, completion."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import structlog
import trio

import ctd
from ctd.control.protocol import Peer, Request
from ctd.control.server import serve_control
from ctd.ctdctl import main as ctdctl
from ctd.ctdctl.admin import human_size
from ctd.ctdctl.client import DEFAULT_TIMEOUT
from ctd.ctdctl.completion import bash_completion
from ctd.ctdctl.main import DaemonError, build_parser, main
from ctd.ctdctl.timeouts import DEFAULTS as TIMEOUTS
from ctd.errors import BadRequest, CtdError, PermissionDenied

COMPLETION_FILE = pathlib.Path(__file__).resolve().parent.parent / "etc" / "ctdctl.bash-completion"
DENIED = "permission denied: 'checkpoint.set' changes the daemon's state and needs root or the admin group"

CHECKPOINT = {
    "source": "feed1",
    "last_run": "2026-01-02T03:04:05Z",
    "last_success": "2026-01-02T03:00:00Z",
    "last_error": "HTTP 503",
    "resume_point": {"page": 3},
    "cursor": "abc-17",
}
PLUGINS = [
    {
        "name": "feed1",
        "adapter": "file",
        "pull": True,
        "can_pull": True,
        "can_push": False,
        "actions": {},
        "sources_of": ["to-misp"],
        "destination_of": [],
    },
    {
        "name": "misp1",
        "adapter": "misp",
        "pull": False,
        "can_pull": True,
        "can_push": True,
        "actions": {
            "add": {"mode": "incremental", "description": "add attributes to an event"},
            "list": {"mode": "snapshot", "description": "replace the event's attributes"},
        },
        "sources_of": [],
        "destination_of": ["to-misp"],
    },
]
STATS = {
    "indicators": {
        "total": 42,
        "active": 40,
        "by_type": {"url": {"active": 30, "inactive": 1}, "ipv4": {"active": 10, "inactive": 1}},
    },
    "by_source": {"feed1": 40, "feed2": 2},
    "sharing": {
        "to-misp": {"pending": 4, "shared": 1234, "failed": 3, "retract_pending": 1, "retracted": 56, "unshared": 7}
    },
    "store": {"db": 5 * 1024 * 1024 + 300, "db_wal": 2048, "db_shm": 0, "requests": 987, "busy_seconds": 1.25},
    "queues": {"store": 0, "sharing.to-misp": 2, "source.feed1": 1},
    "rates": {"ingested": {"last_minute": 12, "last_hour": 340}, "shared": {"last_minute": 3, "last_hour": 77}},
}
VERSION = {
    "version": "0.0.9",
    "python": "3.11.9",
    "trio": "0.27.0",
    "httpx": "0.28.1",
    "msgspec": "0.19.0",
    "sqlite": "3.45.1",
}


class FakeDaemon:
    """Answers the operator commands with canned data; records the requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request, peer: Peer) -> Any:
        self.requests.append(request)
        a = request.args
        match request.cmd:
            case "checkpoint.show":
                return {**CHECKPOINT, "source": a["source"]}
            case "checkpoint.set":
                if a["source"] == "locked":
                    raise PermissionDenied(DENIED)
                return {
                    "source": a["source"],
                    "last_run": "2026-01-01T00:00:00Z",
                    "note": f"the next pull of {a['source']} starts from 2026-01-01T00:00:00Z",
                }
            case "plugins.list":
                return PLUGINS
            case "plugins.check":
                if a["name"] == "misp1":
                    return {"plugin": "misp1", "ok": True, "message": "MISP 2.4.190 reachable"}
                return {"plugin": a["name"], "ok": False, "message": "connection refused"}
            case "indicators.retract":
                return {"value": a["value"], "source": a["source"], "retracted": 2}
            case "rules.mute":
                if a["until"] == "yesterday":
                    raise BadRequest("cannot read --until 'yesterday'")
                return {"rule": a["name"], "muted_until": "2026-01-02T05:04:05Z"}
            case "rules.unmute":
                return {"rule": a["name"], "muted_until": None}
            case "stats":
                return STATS
            case "version":
                return VERSION
            case _:
                raise CtdError(f"unknown command {request.cmd}")


@pytest.fixture
async def daemon(nursery: trio.Nursery, sock_path: str) -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon()
    with structlog.testing.capture_logs():
        await nursery.start(partial(serve_control, sock_path, fake))
        yield fake


async def run(*argv: str) -> int:
    return await trio.to_thread.run_sync(lambda: main(list(argv)))


def sent(daemon: FakeDaemon) -> tuple[str, dict[str, Any]]:
    return daemon.requests[-1].cmd, daemon.requests[-1].args


# --- checkpoint ---------------------------------------------------------------


async def test_checkpoint_show(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`checkpoint show SOURCE` sends the source and prints times, error, resume point and cursor."""
    assert await run("--socket", sock_path, "checkpoint", "show", "feed1") == 0
    assert sent(daemon) == ("checkpoint.show", {"source": "feed1"})
    out = capsys.readouterr().out
    for text in ("feed1", "2026-01-02T03:04:05Z", "2026-01-02T03:00:00Z", "HTTP 503", '{"page":3}', "abc-17"):
        assert text in out
    assert "resume point" in out and "cursor" in out


async def test_checkpoint_show_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json checkpoint show` prints the daemon's data as valid JSON."""
    assert await run("--json", "--socket", sock_path, "checkpoint", "show", "feed1") == 0
    assert json.loads(capsys.readouterr().out) == CHECKPOINT


async def test_checkpoint_set_days(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`checkpoint set SOURCE --days N` sends days and a null since, and prints the note."""
    assert await run("--socket", sock_path, "checkpoint", "set", "feed1", "--days", "7") == 0
    assert sent(daemon) == ("checkpoint.set", {"source": "feed1", "since": None, "days": 7})
    out = capsys.readouterr().out
    assert "2026-01-01T00:00:00Z" in out and "the next pull of feed1 starts from" in out


async def test_checkpoint_set_since(daemon: FakeDaemon, sock_path: str) -> None:
    """`checkpoint set SOURCE --since ISO` sends since and a null days."""
    assert await run("--socket", sock_path, "checkpoint", "set", "feed1", "--since", "2026-01-01T00:00:00Z") == 0
    assert sent(daemon) == ("checkpoint.set", {"source": "feed1", "since": "2026-01-01T00:00:00Z", "days": None})


@pytest.mark.parametrize("extra", [[], ["--days", "7", "--since", "2026-01-01T00:00:00Z"]])
async def test_checkpoint_set_needs_exactly_one(
    daemon: FakeDaemon, sock_path: str, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`checkpoint set` without, or with both of, --since/--days is a usage error (exit 2), nothing sent."""
    with pytest.raises(SystemExit) as exc:
        main(["--socket", sock_path, "checkpoint", "set", "feed1", *extra])
    assert exc.value.code == 2
    assert "--since" in capsys.readouterr().err
    assert daemon.requests == []


async def test_denied_message_shown_as_is(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `denied` error reply prints the daemon's message unchanged on stderr and exits 2."""
    assert await run("--socket", sock_path, "checkpoint", "set", "locked", "--days", "1") == 2
    captured = capsys.readouterr()
    assert captured.err == f"ctdctl: {DENIED}\n"
    assert captured.out == ""


async def test_denied_reply_code(daemon: FakeDaemon, sock_path: str) -> None:
    """The client sees a permission refusal as a DaemonError with code `denied`."""
    client = ctdctl.ControlClient(sock_path)
    with pytest.raises(DaemonError) as exc:
        await trio.to_thread.run_sync(lambda: client.call("checkpoint.set", source="locked", since=None, days=1))
    assert (exc.value.code, exc.value.message) == ("denied", DENIED)


# --- plugins ------------------------------------------------------------------


async def test_plugins_list_table(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`plugins list` prints NAME ADAPTER PULL PUSH ACTIONS USED_BY aligned, then the actions."""
    assert await run("--socket", sock_path, "plugins", "list") == 0
    assert sent(daemon) == ("plugins.list", {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ADAPTER", "PULL", "PUSH", "ACTIONS", "USED_BY"]
    assert lines[2].index(" misp ") + 1 == lines[0].index("ADAPTER")
    assert lines[2].index("add,list") == lines[0].index("ACTIONS")
    assert lines[1].endswith("source of to-misp") and lines[2].endswith("destination of to-misp")
    assert any(line.split()[:3] == ["misp1", "list", "snapshot"] for line in lines[4:])


async def test_plugins_list_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json plugins list` prints the daemon's data as valid JSON."""
    assert await run("--json", "--socket", sock_path, "plugins", "list") == 0
    assert json.loads(capsys.readouterr().out) == PLUGINS


async def test_plugins_check_ok(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`plugins check NAME` prints `NAME: ok - message` and exits 0."""
    assert await run("--socket", sock_path, "plugins", "check", "misp1") == 0
    assert sent(daemon) == ("plugins.check", {"name": "misp1"})
    assert capsys.readouterr().out == "misp1: ok - MISP 2.4.190 reachable\n"


async def test_plugins_check_failure_exits_2(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plugins check` prints `NAME: FAILED - message` and exits 2 when the check failed."""
    assert await run("--socket", sock_path, "plugins", "check", "feed1") == 2
    assert capsys.readouterr().out == "feed1: FAILED - connection refused\n"


async def test_plugins_check_json_failure(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json plugins check` prints the result as JSON and still exits 2 on failure."""
    assert await run("--json", "--socket", sock_path, "plugins", "check", "feed1") == 2
    assert json.loads(capsys.readouterr().out)["ok"] is False


async def test_plugins_check_long_timeout(daemon: FakeDaemon, sock_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`plugins check` waits at least 60 s for the daemon (its check may take 30 s)."""
    timeouts: list[float | None] = []
    real = ctdctl.ControlClient

    def recording(path: str, timeout: float | None = DEFAULT_TIMEOUT) -> ctdctl.ControlClient:
        timeouts.append(timeout)
        return real(path, timeout)

    monkeypatch.setattr(ctdctl, "ControlClient", recording)
    assert await run("--socket", sock_path, "plugins", "check", "misp1") == 0
    assert timeouts == [TIMEOUTS["plugins check"]] and TIMEOUTS["plugins check"] >= 60


# --- retract and mute ---------------------------------------------------------


async def test_retract_args_and_output(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators retract VALUE --source S --type T` sends all three and prints the count."""
    assert (
        await run(
            "--socket", sock_path, "indicators", "retract", "evil.example", "--source", "feed1", "--type", "domain"
        )
        == 0
    )
    assert sent(daemon) == (
        "indicators.retract",
        {"value": "evil.example", "source": "feed1", "type": "domain", "until": None},
    )
    out = capsys.readouterr().out
    assert "evil.example" in out and "feed1" in out
    assert out.splitlines()[-2].split() == ["retracted", "2"]


async def test_retract_defaults_null(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`indicators retract VALUE` sends null source and type and says every source was meant."""
    assert await run("--socket", sock_path, "indicators", "retract", "evil.example") == 0
    assert sent(daemon) == (
        "indicators.retract",
        {"value": "evil.example", "source": None, "type": None, "until": None},
    )
    assert "all sources" in capsys.readouterr().out


async def test_rules_mute(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules mute NAME --until 2h` passes the duration through and prints the mute's end."""
    assert await run("--socket", sock_path, "rules", "mute", "high-domains", "--until", "2h") == 0
    assert sent(daemon) == ("rules.mute", {"name": "high-domains", "until": "2h"})
    out = capsys.readouterr().out
    assert "high-domains" in out and "2026-01-02T05:04:05Z" in out


async def test_rules_mute_needs_until(daemon: FakeDaemon, sock_path: str) -> None:
    """`rules mute NAME` without --until is a usage error (exit 2), nothing sent."""
    with pytest.raises(SystemExit) as exc:
        main(["--socket", sock_path, "rules", "mute", "high-domains"])
    assert exc.value.code == 2
    assert daemon.requests == []


async def test_rules_mute_bad_until_exits_2(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules mute` with a time the daemon cannot read exits 2 with its message."""
    assert await run("--socket", sock_path, "rules", "mute", "r", "--until", "yesterday") == 2
    assert "cannot read --until 'yesterday'" in capsys.readouterr().err


async def test_rules_unmute(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules unmute NAME` sends the name and prints that the rule is not muted."""
    assert await run("--socket", sock_path, "rules", "unmute", "high-domains") == 0
    assert sent(daemon) == ("rules.unmute", {"name": "high-domains"})
    assert "not muted" in capsys.readouterr().out


async def test_rules_unmute_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json rules unmute` prints muted_until null."""
    assert await run("--json", "--socket", sock_path, "rules", "unmute", "r") == 0
    assert json.loads(capsys.readouterr().out) == {"rule": "r", "muted_until": None}


# --- stats --------------------------------------------------------------------


async def test_stats_sections(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`stats` prints totals and the by-type, by-source, sharing, store, queue and rate tables."""
    assert await run("--socket", sock_path, "stats") == 0
    assert sent(daemon) == ("stats", {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "indicators: 42 total, 40 active"
    for header in (
        ["TYPE", "ACTIVE", "INACTIVE"],
        ["SOURCE", "INDICATORS"],
        ["SHARING", "PENDING", "SHARED", "FAILED", "RETRACT_PENDING", "RETRACTED", "UNSHARED"],
        ["FILE", "SIZE", "BYTES"],
        ["QUEUE", "DEPTH"],
        ["RATE", "LAST_MINUTE", "LAST_HOUR"],
    ):
        assert header in [line.split() for line in lines]
    rows = [line.split() for line in lines]
    assert ["feed1", "40"] in rows and ["sharing.to-misp", "2"] in rows
    assert ["to-misp", "4", "1234", "3", "1", "56", "7"] in rows
    assert ["ingested", "12", "340"] in rows and ["shared", "3", "77"] in rows


async def test_stats_store_sizes(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`stats` prints store files in KiB/MiB and in bytes, and the store's request count."""
    assert await run("--socket", sock_path, "stats") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["db", "5.0", "MiB", str(5 * 1024 * 1024 + 300)] in rows
    assert ["db_wal", "2.0", "KiB", "2048"] in rows and ["db_shm", "0", "B", "0"] in rows
    assert any(r[:3] == ["store", "requests", "987,"] for r in rows)


async def test_stats_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json stats` prints the daemon's data as valid JSON."""
    assert await run("--json", "--socket", sock_path, "stats") == 0
    assert json.loads(capsys.readouterr().out) == STATS


def test_human_size_units() -> None:
    """Sizes switch unit at 1024: B, KiB, MiB, GiB."""
    assert [human_size(n) for n in (0, 1023, 1536, 3 * 1024**2, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]


# --- version ------------------------------------------------------------------


async def test_version_client_and_daemon(
    daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`version` prints the client's version and the daemon's version and libraries."""
    assert await run("--socket", sock_path, "version") == 0
    assert sent(daemon) == ("version", {})
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["client", ctd.__version__]
    assert rows[1] == ["daemon", "0.0.9"]
    assert ["sqlite", "3.45.1"] in rows and ["trio", "0.27.0"] in rows


async def test_version_json(daemon: FakeDaemon, sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json version` prints the client's and the daemon's versions as valid JSON."""
    assert await run("--json", "--socket", sock_path, "version") == 0
    assert json.loads(capsys.readouterr().out) == {"client": {"version": ctd.__version__}, "daemon": VERSION}


async def test_version_without_daemon(sock_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`version` with no daemon prints the client's version and the connection hint, and exits 1."""
    assert await run("--socket", sock_path, "version") == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"client   {ctd.__version__}"]
    assert f"cannot connect to {sock_path}" in captured.err and "is the daemon running?" in captured.err


# --- help and completion ------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`ctdctl --help` lists every command, one line each with its help."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for cmd in (
        "status",
        "sources",
        "sync",
        "reload",
        "indicators",
        "rules",
        "sharing",
        "checkpoint",
        "plugins",
        "stats",
        "version",
        "completion",
    ):
        assert any(line.split()[:1] == [cmd] and len(line.split()) > 1 for line in lines), cmd


def test_completion_file_is_current() -> None:
    """etc/ctdctl.bash-completion is exactly what `ctdctl completion bash` generates."""
    assert COMPLETION_FILE.read_text() == bash_completion(build_parser())


def test_completion_command_prints_script(capsys: pytest.CaptureFixture[str]) -> None:
    """`ctdctl completion bash` prints the script without contacting a daemon."""
    assert main(["--socket", "/nonexistent/ctd.sock", "completion", "bash"]) == 0
    assert capsys.readouterr().out == COMPLETION_FILE.read_text()


BASH = shutil.which("bash") or ""
needs_bash = pytest.mark.skipif(not BASH, reason="bash is not installed")


@needs_bash
def test_completion_bash_syntax() -> None:
    """`bash -n` accepts the completion script."""
    subprocess.run([BASH, "-n", str(COMPLETION_FILE)], check=True, capture_output=True)


def complete(*words: str) -> list[str]:
    """COMPREPLY after sourcing the script and completing the last of ``words``."""
    script = (
        f"source {COMPLETION_FILE}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        '_ctdctl; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run([BASH, "--norc", "-c", script, "bash", *words], check=True, capture_output=True, text=True)
    return done.stdout.split()


@needs_bash
def test_completion_top_level() -> None:
    """Completing `ctdctl ind` yields `indicators`."""
    assert complete("ctdctl", "ind") == ["indicators"]


@needs_bash
def test_completion_subcommands_and_options() -> None:
    """Subcommands and options complete after global options and their arguments."""
    assert complete("ctdctl", "--socket", "/tmp/x.sock", "checkpoint", "") == ["show", "set", "reset"]
    assert complete("ctdctl", "checkpoint", "set", "feed1", "--d") == ["--days"]
    assert complete("ctdctl", "indicators", "export", "--format", "") == ["jsonl", "csv"]
