"""Tests for ctd.service.sdnotify against real AF_UNIX datagram sockets."""

import os
import shutil
import socket
import tempfile
import time
import uuid

import pytest
import trio

from ctd.service.sdnotify import Notifier, run_watchdog, watchdog_interval


@pytest.fixture
def path_socket():
    """A bound datagram socket in a short temp dir; yields (sock, NOTIFY_SOCKET)."""
    d = tempfile.mkdtemp(dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(d)


@pytest.fixture
def abstract_socket():
    """A bound abstract-namespace datagram socket; yields (sock, '@name')."""
    name = f"ctd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def recv(sock):
    return sock.recv(4096).decode()


def drain(sock):
    msgs = []
    sock.setblocking(False)
    while True:
        try:
            msgs.append(sock.recv(4096).decode())
        except BlockingIOError:
            return msgs


def test_ready_to_path_socket(path_socket):
    """ready() sends READY=1 to a filesystem NOTIFY_SOCKET."""
    sock, addr = path_socket
    assert Notifier.from_env({"NOTIFY_SOCKET": addr}).ready() is True
    assert recv(sock) == "READY=1\n"


def test_ready_with_status(path_socket):
    """ready(status) adds a STATUS= line."""
    sock, addr = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": addr}).ready("serving")
    assert recv(sock) == "READY=1\nSTATUS=serving\n"


def test_ready_to_abstract_socket(abstract_socket):
    """An '@name' NOTIFY_SOCKET addresses the abstract namespace."""
    sock, addr = abstract_socket
    Notifier.from_env({"NOTIFY_SOCKET": addr}).ready()
    assert recv(sock) == "READY=1\n"


def test_reloading_carries_monotonic_usec(path_socket):
    """reloading() sends RELOADING=1 with a current CLOCK_MONOTONIC in µs."""
    sock, addr = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_env({"NOTIFY_SOCKET": addr}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = recv(sock).splitlines()
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_stopping(abstract_socket):
    """stopping() sends STOPPING=1."""
    sock, addr = abstract_socket
    Notifier.from_env({"NOTIFY_SOCKET": addr}).stopping()
    assert recv(sock) == "STOPPING=1\n"


def test_watchdog(path_socket):
    """watchdog() sends WATCHDOG=1."""
    sock, addr = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": addr}).watchdog()
    assert recv(sock) == "WATCHDOG=1\n"


def test_status_is_kept_on_one_line(path_socket):
    """status() sends STATUS= and cannot inject extra assignments via newlines."""
    sock, addr = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": addr}).status("a\nREADY=1")
    assert recv(sock) == "STATUS=a READY=1\n"


def test_no_notify_socket_is_noop():
    """Without NOTIFY_SOCKET every method does nothing and returns False."""
    n = Notifier.from_env({})
    assert n.address is None
    assert [n.ready("x"), n.reloading(), n.stopping(), n.watchdog(), n.status("x")] == [False] * 5


def test_missing_socket_path_does_not_raise():
    """A NOTIFY_SOCKET path that does not exist is reported as not sent, not raised."""
    d = tempfile.mkdtemp(dir="/tmp")
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": os.path.join(d, "gone")})
        assert n.ready() is False
        assert n.watchdog() is False
    finally:
        shutil.rmtree(d)


def test_watchdog_interval_is_half_for_own_pid():
    """WATCHDOG_PID equal to our pid gives half of WATCHDOG_USEC, in seconds."""
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 15.0


def test_watchdog_interval_without_pid():
    """WATCHDOG_USEC without WATCHDOG_PID applies to us."""
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0


def test_watchdog_interval_other_pid_is_none():
    """WATCHDOG_PID of another process means the watchdog is not ours."""
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(env) is None


def test_watchdog_interval_unset_or_bad_is_none():
    """No, zero or malformed WATCHDOG_USEC gives None."""
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


async def test_run_watchdog_pings_at_interval(path_socket, autojump_clock):
    """run_watchdog pings every interval: ~5 pings in 10 s at a 2 s interval."""
    sock, addr = path_socket
    interval = watchdog_interval({"WATCHDOG_USEC": "4000000"})
    async with trio.open_nursery() as nursery:
        await nursery.start(run_watchdog, Notifier.from_env({"NOTIFY_SOCKET": addr}), interval)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    msgs = drain(sock)
    assert set(msgs) == {"WATCHDOG=1\n"}
    assert 4 <= len(msgs) <= 6


async def test_run_watchdog_rejects_nonpositive_interval():
    """run_watchdog refuses an interval <= 0 instead of busy-looping."""
    with pytest.raises(ValueError):
        await run_watchdog(Notifier(None), 0)
