"""ctdctl's per-command timeouts: short for reads, long for sync, --timeout overrides, exit 124 with one line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctd.ctdctl import client as ctl_client
from ctd.ctdctl import main as ctdctl
from ctd.ctdctl.timeouts import DEFAULTS
from tests.daemonproc import short_tmpdir


@pytest.fixture
def silent_daemon() -> Iterator[Path]:
    """A control socket that accepts connections and never answers (a hung daemon)."""
    d = short_tmpdir()
    path = d / "ctd.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
        path.unlink(missing_ok=True)
        d.rmdir()


def test_a_daemon_that_never_answers_is_a_one_line_timeout_exit_124(silent_daemon, capsys):
    """`ctdctl --timeout 0.2 status` against a hung daemon: exit 124 and one line naming the command and limit."""
    assert ctdctl.main(["--socket", str(silent_daemon), "--timeout", "0.2", "status"]) == 124
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no answer from the daemon within 0.2 s (status)" in err and "--timeout" in err


def test_the_timeout_option_goes_after_the_command_too(silent_daemon, capsys):
    """`--timeout` is a global option: accepted after the command like --json."""
    assert ctdctl.main(["sharing", "sync", "x", "--socket", str(silent_daemon), "--timeout", "0.1"]) == 124
    assert "(sharing.sync)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], DEFAULTS["status"]),
        (["sharing", "list"], DEFAULTS["sharing list"]),
        (["sync", "src"], DEFAULTS["sync"]),
        (["sharing", "sync", "s"], DEFAULTS["sharing sync"]),
        (["status", "--timeout", "5"], 5.0),
        (["sync", "src", "--timeout", "0"], None),
    ],
)
def test_each_command_gets_its_own_timeout(argv, expected, monkeypatch, tmp_path):
    """Reads wait 30 s, sync and sharing sync an hour; --timeout overrides, 0 waits without limit."""
    seen: list[float | None] = []

    class Recording(ctl_client.ControlClient):
        def __init__(self, path: str, timeout: float | None = None) -> None:
            seen.append(timeout)
            super().__init__(path, timeout)

    monkeypatch.setattr(ctdctl, "ControlClient", Recording)
    ctdctl.main(["--socket", str(tmp_path / "none.sock"), *argv])
    assert seen[0] == expected  # `sync` then opens a second, short-lived client to poll its progress
    assert seen[1:] in ([], [10.0])
    assert DEFAULTS["status"] <= 30 and DEFAULTS["sync"] >= 3600


def test_a_negative_timeout_is_a_usage_error(capsys):
    """`--timeout -1` is refused by the parser."""
    with pytest.raises(SystemExit) as exc:
        ctdctl.main(["--timeout", "-1", "status"])
    assert exc.value.code == 2 and "--timeout" in capsys.readouterr().err


def test_a_stream_waits_the_timeout_for_each_item_not_in_total(monkeypatch):
    """The deadline restarts after each streamed item; without that restart it would have passed."""
    clock = [0.0]
    monkeypatch.setattr(ctl_client.time, "monotonic", lambda: clock[0])
    a, b = socket.socketpair()
    with a, b:
        lines = ctl_client._Lines(a, 10.0)
        b.sendall(b'{"item": 1}\n')
        assert lines.readline() == b'{"item": 1}\n'
        clock[0] = 15.0  # longer than the timeout since the stream began
        with pytest.raises(TimeoutError):
            lines.remaining()
        lines.restart()
        b.sendall(b'{"item": 2}\n')
        assert lines.readline() == b'{"item": 2}\n'
