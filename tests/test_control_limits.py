"""Control connections are capped (total, per peer uid), idle ones time out, and
running out of descriptors neither floods the log nor stops the server."""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import select
import socket
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import msgspec
import pytest
import structlog
import trio

from ctd.adapters.edl.server import ServerSettings
from ctd.control import server as control
from ctd.control.limits import DEFAULT_LIMITS as LIMITS
from ctd.control.limits import ConnectionLimits
from ctd.ctdctl.main import main as ctdctl_main
from tests.daemonproc import REPO, DaemonProc, short_tmpdir
from tests.peerclients import Holder, request_as

NOBODY = NOGROUP = 65534
UNIT = REPO / "systemd" / "ctd.service"
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as other uids")


def unit_nofile() -> int:
    """LimitNOFILE= of the shipped unit; systemd's default soft limit (1024) when unset."""
    m = re.search(r"(?m)^LimitNOFILE=(\d+)$", UNIT.read_text())
    return int(m.group(1)) if m else 1024


# --- the real daemon --------------------------------------------------------------


@pytest.fixture
def daemon() -> Iterator[DaemonProc]:
    """The daemon with socket_group nogroup, under the unit's descriptor limit."""
    d = DaemonProc(short_tmpdir(), "")
    os.chmod(d.dir, 0o755)  # let the unprivileged clients reach the socket's directory
    d.socket = d.dir / "run" / "ctd.sock"
    d.write_config(f'[daemon]\nstate_dir = "{d.dir}/var"\nsocket = "{d.socket}"\nsocket_group = "nogroup"\n')
    try:
        d.start()
        assert d.proc is not None
        n = unit_nofile()
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (n, n))
        d.wait_ready()
        yield d
        assert d.stop() == 0
    finally:
        d.cleanup()


def _no_accept_tracebacks(d: DaemonProc) -> None:
    text = d.log.read_text()
    assert "accept returned" not in text and "Traceback" not in text


@needs_root
def test_one_uid_cannot_exhaust_the_daemon(daemon: DaemonProc) -> None:
    """A read-group member opening 1,100 idle connections keeps only its share; others and ctdctl still work."""
    lim = LIMITS
    hog = Holder(str(daemon.socket), NOBODY, NOGROUP, 1100, expect_silent=lim.per_uid)
    try:
        res = hog.result
        assert (res["opened"], res["silent"]) == (1100, lim.per_uid), res
        assert res["codes"] == ["busy"]
        assert res["errors"] == [
            f"too many control connections from uid {NOBODY} (limit {lim.per_uid}); close some and retry"
        ]
        other = request_as(str(daemon.socket), 65533, NOGROUP)
        assert other.get("ok") is True, other
        status = daemon.ctl("status")
        assert status.returncode == 0, status.stderr
    finally:
        hog.release()
    _no_accept_tracebacks(daemon)
    refused = [e for e in daemon.logs() if e.get("ctd_event") == "control_refused"]
    assert refused and refused[0]["ctd_peer_uid"] == NOBODY
    assert len(refused) <= 2  # rate-limited: not one line per refused connection


@needs_root
def test_total_cap_keeps_a_reserve_for_root(daemon: DaemonProc) -> None:
    """Several uids together fill the unprivileged share; the next uid is refused, root still gets in."""
    lim = LIMITS
    share = lim.total - lim.reserved
    holders: list[Holder] = []
    try:
        uid = NOBODY
        while share > 0:
            n = min(lim.per_uid, share)
            holders.append(Holder(str(daemon.socket), uid, NOGROUP, n, expect_silent=n))
            assert holders[-1].result["silent"] == n, holders[-1].result
            share -= n
            uid -= 1
        late = request_as(str(daemon.socket), uid, NOGROUP)
        assert (late.get("ok"), late.get("code")) == (False, "busy"), late
        assert late["error"] == (
            f"too many control connections (limit {lim.total - lim.reserved} for unprivileged peers); retry shortly"
        )
        status = daemon.ctl("status")
        assert status.returncode == 0, status.stderr
    finally:
        for h in holders:
            h.release()
    assert request_as(str(daemon.socket), uid, NOGROUP).get("ok") is True  # slots come back
    _no_accept_tracebacks(daemon)


# --- the server in this process, over a real socket --------------------------------


async def _start(nursery: trio.Nursery, path: str, **kw: Any) -> None:
    async def dispatch(request: Any, peer: Any) -> Any:
        return {"cmd": request.cmd}

    await nursery.start(partial(control.serve_control, path, dispatch, **kw))


async def _connect(path: str) -> trio.socket.SocketType:
    s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await s.connect(path)
    return s


async def _reply(s: trio.socket.SocketType) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await s.recv(65536)
        if not chunk:
            break
        data += chunk
    return msgspec.json.decode(data)


async def test_idle_connections_time_out_and_free_their_slots(
    nursery: trio.Nursery, sock_path: str, autojump_clock: trio.abc.Clock
) -> None:
    """Idle connections are answered and closed after the request timeout; their slots serve the next client."""
    await _start(nursery, sock_path, request_timeout=10, limits=ConnectionLimits(total=8, per_uid=2, reserved=1))
    idle = [await _connect(sock_path) for _ in range(2)]
    extra = await _connect(sock_path)
    assert (await _reply(extra))["code"] == "busy"
    extra.close()
    await trio.sleep(11)
    for s in idle:
        assert (await _reply(s))["error"] == "timed out waiting for the request"
        s.close()
    s = await _connect(sock_path)
    await s.send(b'{"v":1,"cmd":"status"}\n')
    assert await _reply(s) == {"v": 1, "ok": True, "data": {"cmd": "status"}}
    s.close()


async def test_refusals_are_logged_once_a_minute(
    nursery: trio.Nursery, sock_path: str, autojump_clock: trio.abc.Clock
) -> None:
    """Refusals of one uid log one warning per minute, the next one counting those left out."""
    with structlog.testing.capture_logs() as logs:
        await _start(nursery, sock_path, limits=ConnectionLimits(total=8, per_uid=0, reserved=1))
        for _ in range(5):
            s = await _connect(sock_path)
            assert (await _reply(s))["code"] == "busy"
            s.close()
        await trio.sleep(61)
        s = await _connect(sock_path)
        await _reply(s)
        s.close()
    refused = [e for e in logs if e.get("ctd_event") == "control_refused"]
    assert [(e["ctd_peer_uid"], e["suppressed"]) for e in refused] == [(os.getuid(), 0), (os.getuid(), 4)]
    assert refused[0]["log_level"] == "warning"


async def test_ctdctl_shows_the_refusal_even_before_sending(
    nursery: trio.Nursery, sock_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ctdctl prints the daemon's refusal and exits 2, even when the daemon closed before reading its request."""
    with structlog.testing.capture_logs():
        await _start(nursery, sock_path, limits=ConnectionLimits(total=8, per_uid=0, reserved=1))
        # A request far larger than the socket buffer: the daemon refuses and closes mid-send.
        value = "x" * (4 << 20)
        rc = await trio.to_thread.run_sync(lambda: ctdctl_main(["--socket", sock_path, "indicators", "show", value]))
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"ctdctl: too many control connections from uid {os.getuid()} (limit 0); close some and retry\n")


@pytest.fixture
def few_descriptors() -> Iterator[list[int]]:
    """Lower this process's descriptor limit close to what it uses; yields a list to fill with dups."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 32, hard))
    filler: list[int] = []
    try:
        yield filler
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fill(filler: list[int]) -> None:
    """Use up every free descriptor."""
    while True:
        try:
            filler.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
            return


async def test_accept_emfile_logs_one_warning_and_recovers(
    nursery: trio.Nursery,
    sock_path: str,
    autojump_clock: trio.abc.Clock,
    few_descriptors: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Out of descriptors, accept backs off with one warning (no traceback flood) and serves again after."""
    with structlog.testing.capture_logs() as logs:
        await _start(nursery, sock_path)
        client = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _fill(few_descriptors)
        await client.connect(sock_path)  # queued in the backlog: the server cannot accept it
        await trio.sleep(30)
        failed = [e for e in logs if e.get("ctd_event") == "control_accept_failed"]
        assert [(e["log_level"], e["error"]) for e in failed] == [("warning", "EMFILE")]
        for fd in few_descriptors:
            os.close(fd)
        few_descriptors.clear()
        await client.send(b'{"v":1,"cmd":"status"}\n')
        assert (await _reply(client))["ok"] is True
        client.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    recovered = [e for e in logs if e.get("ctd_event") == "control_accept_recovered"]
    assert len(recovered) == 1 and recovered[0]["failures"] > 1


# --- the unit's descriptor limit --------------------------------------------------


def test_unit_sets_a_descriptor_limit_sized_from_the_caps() -> None:
    """The unit sets LimitNOFILE= (soft = hard) and its sizing comment quotes the caps in the code."""
    text = UNIT.read_text()
    assert re.search(r"(?m)^LimitNOFILE=\d+$", text), "no LimitNOFILE= in the unit"
    lim = LIMITS
    edl = ServerSettings(host="127.0.0.1", port=0, lists_dir="/").max_connections
    assert re.search(rf"(?m)^#\s+EDL server\s+{edl} connections per edl plugin", text)
    assert re.search(
        rf"(?m)^#\s+control socket\s+{lim.total} connections: {lim.per_uid} per uid, "
        rf"{lim.reserved} of them kept for root and ctd",
        text,
    )
    assert unit_nofile() >= 2 * (edl + lim.total)


@pytest.fixture
def edl_daemon() -> Iterator[tuple[DaemonProc, tuple[str, int]]]:
    """The daemon with an EDL server on a free loopback port, under the unit's descriptor limit."""
    d = DaemonProc(short_tmpdir(), "")
    os.chmod(d.dir, 0o755)
    d.socket = d.dir / "run" / "ctd.sock"
    d.write_config(
        f'[daemon]\nstate_dir = "{d.dir}/var"\nsocket = "{d.socket}"\nsocket_group = "nogroup"\n'
        '[plugins.edl]\nadapter = "edl"\npull = false\nbind = "127.0.0.1:0"\n'
    )
    try:
        d.start()
        assert d.proc is not None
        n = unit_nofile()
        resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (n, n))
        d.wait_ready()
        [address] = [e["address"] for e in d.logs() if e.get("ctd_event") == "edl_listening"]
        host, _, port = address.rpartition(":")
        yield d, (host, int(port))
        assert d.stop() == 0
    finally:
        d.cleanup()


def _edl_flood(addr: tuple[str, int], n: int) -> tuple[list[socket.socket], int]:
    """Open ``n`` idle EDL connections; returns them and how many the server closed (refused).

    They come from many loopback addresses, at most 16 each (the EDL server's per-client
    cap), so the server really reaches its total cap. A refused connection is answered
    503 once its request head has had 5 s to arrive, so wait longer than that.
    """
    socks = [socket.create_connection(addr, timeout=5, source_address=(f"127.0.1.{1 + i // 16}", 0)) for i in range(n)]
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    closed: set[int] = set()
    deadline = time.monotonic() + 8  # under the 10 s request timeout of the accepted ones
    while len(closed) < n and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            closed.add(fd)
            poller.unregister(fd)
        if len(closed) >= n - 256:  # the EDL cap: a moment more to see nothing else closes
            deadline = min(deadline, time.monotonic() + 0.5)
    return socks, len(closed)


@needs_root
def test_unit_limit_covers_full_edl_and_control_floods(edl_daemon: tuple[DaemonProc, tuple[str, int]]) -> None:
    """Under the unit's LimitNOFILE, EDL at its cap plus a 1,100-connection control flood leave ctdctl working."""
    d, addr = edl_daemon
    edl_cap = ServerSettings(host="127.0.0.1", port=0, lists_dir="/").max_connections
    socks, refused = _edl_flood(addr, edl_cap + 100)
    try:
        assert refused >= 100  # the EDL server is at its cap
        hog = Holder(str(d.socket), NOBODY, NOGROUP, 1100, expect_silent=LIMITS.per_uid)
        try:
            assert hog.result["silent"] == LIMITS.per_uid, hog.result
            status = d.ctl("status")
            assert status.returncode == 0, status.stderr
        finally:
            hog.release()
    finally:
        for s in socks:
            s.close()
    _no_accept_tracebacks(d)
    assert not [e for e in d.logs() if e.get("ctd_event") == "control_accept_failed"]
