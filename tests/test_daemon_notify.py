"""sd_notify from the real daemon process, received on a bound datagram socket."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir


@pytest.fixture
def notify_socket():
    d = short_tmpdir()
    path = d / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    yield d, path, s
    s.close()


def receive_until(sock: socket.socket, wanted: str, seen: list[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = sock.recv(4096).decode()
        seen.append(msg)
        if wanted in msg:
            return msg
    raise AssertionError(f"no {wanted!r} in {seen}")


def test_ready_reloading_watchdog_stopping(notify_socket):
    """The daemon sends READY, WATCHDOG pings, RELOADING+MONOTONIC_USEC then READY on SIGHUP, STOPPING on SIGTERM."""
    workdir, path, sock = notify_socket
    (workdir / "a.txt").write_text("a.example\n")
    d = DaemonProc(
        workdir, '[plugins.a]\nadapter = "file"\npath = "a.txt"\n', NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000"
    )
    try:
        d.start()
        seen: list[str] = []
        assert "READY=1" in receive_until(sock, "READY=1", seen)
        receive_until(sock, "WATCHDOG=1", seen)
        d.signal(signal.SIGHUP)
        reloading = receive_until(sock, "RELOADING=1", seen)
        usec = int(reloading.split("MONOTONIC_USEC=")[1].split("\n")[0])
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
        receive_until(sock, "READY=1", seen)
        d.signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1", seen)
        assert d.proc.wait(30) == 0
    finally:
        d.cleanup()
