"""A config file broken while the daemon runs: ctdctl still reaches the daemon and hears its verdict (issue 13)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ctd.control.protocol import PUBLISHED_NAME
from ctd.ctdctl.client import resolve_socket
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for

FEED = """
[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"
"""


@pytest.fixture
def daemon():
    d = DaemonProc(short_tmpdir(), FEED)
    d._env["RUNTIME_DIRECTORY"] = str(d.dir)  # as systemd sets it for ExecStart= and ExecReload=
    (d.dir / "osint.txt").write_text("evil.example\n")
    yield d
    d.cleanup()


def ctdctl(d: DaemonProc, *args: str) -> subprocess.CompletedProcess:
    """ctdctl as ExecReload= runs it: --config only, from another directory."""
    return subprocess.run(
        [sys.executable, "-m", "ctd.ctdctl.main", "--config", str(d.config), *args],
        capture_output=True,
        text=True,
        env=d._env,
        cwd="/",
        timeout=120,
    )


def rejected(d: DaemonProc) -> list[dict]:
    return [e for e in d.logs() if e.get("ctd_event") == "config_rejected"]


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param('\n[plugins.oops\nadapter = "file"\n', id="syntax-error-after-daemon-table"),
        pytest.param('[daemon\nsocket = "elsewhere"\n', id="daemon-table-itself-broken"),
    ],
)
def test_reload_of_a_broken_file_reports_the_daemons_verdict(daemon: DaemonProc, breakage: str) -> None:
    """`ctdctl --config X reload` on a TOML syntax error exits 2 with the daemon's error; status still works."""
    daemon.start().wait_ready()
    good = daemon.config.read_text()
    if breakage.startswith("[daemon"):
        daemon.config.write_text(breakage + good.split("\n", 1)[1])
    else:
        daemon.config.write_text(good + breakage)
    r = ctdctl(daemon, "reload")
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.splitlines()  # one line: the daemon's verdict, with the file and where
    assert "rejected, still running the previous one" in line and str(daemon.config) in line
    assert "TOML syntax error" in line and "line" in line
    wait_for(lambda: rejected(daemon), "config_rejected in the log")
    s = ctdctl(daemon, "--json", "status")
    assert s.returncode == 0, s.stderr
    assert "does not parse" in s.stderr  # says how the socket was found
    daemon.config.write_text(good)
    assert ctdctl(daemon, "reload").returncode == 0
    assert daemon.stop() == 0
    assert not (daemon.dir / PUBLISHED_NAME).exists()  # removed at a clean stop


def test_published_file_is_only_used_for_its_own_config(tmp_path) -> None:
    """A published socket belongs to one config file: another broken file gets the default socket."""
    (tmp_path / PUBLISHED_NAME).write_text(f'{{"socket": "/x/ctd.sock", "config": "{tmp_path}/a.toml", "pid": 1}}')
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text("[daemon\n")
    env = {"RUNTIME_DIRECTORY": str(tmp_path)}
    notes: list[str] = []
    assert resolve_socket(None, str(tmp_path / "a.toml"), env, notes) == "/x/ctd.sock"
    assert "published" in notes[0]
    assert resolve_socket(None, str(tmp_path / "b.toml"), env) == "/run/ctd/ctd.sock"


def test_socket_line_read_from_a_file_broken_elsewhere(tmp_path) -> None:
    """The [daemon] socket line is found when the syntax error is elsewhere (not a socket of another table)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[plugins.x]\nsocket = 'no'\n[daemon]\nsocket = 'var/ctd.sock'  # here\n[rules.r\n")
    assert resolve_socket(None, str(cfg), {}) == "var/ctd.sock"
