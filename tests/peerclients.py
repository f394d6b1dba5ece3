"""Control-socket clients running as another uid (forked, privileges dropped).

The test interpreter lives under /root, which an unprivileged uid cannot
execute, so the clients are forked children of the test process: they only use
sockets and pipes, then leave with ``os._exit`` (no Python cleanup runs twice).
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from typing import Any

STATUS = {"v": 1, "cmd": "status", "args": {}}

# Release pipes of the live holders: a later fork inherits them and must close
# them, or an earlier holder would never see its release.
_RELEASE_FDS: set[int] = set()


def _drop(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


def _request(path: str, request: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before reading the request: the refusal is still there to read
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        return {"os_error": exc.errno}
    finally:
        s.close()
    return json.loads(data) if data else {"closed": True}


def _first_line(s: socket.socket) -> dict[str, Any] | None:
    s.settimeout(1.0)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    return json.loads(data) if data.endswith(b"\n") else None


def _connect_retrying(path: str, patience: float = 2.0) -> socket.socket | int:
    """Connect, retrying while the listen backlog is full (EAGAIN); the errno once patience runs out."""
    deadline = time.monotonic() + patience
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            s.connect(path)
        except BlockingIOError as exc:
            s.close()
            if time.monotonic() > deadline:
                return exc.errno or 0
            time.sleep(0.001)
            continue
        except OSError as exc:
            s.close()
            return exc.errno or 0
        s.setblocking(True)
        return s


def _hold(path: str, n: int, settle: float, expect_silent: int) -> dict[str, Any]:
    """Open ``n`` idle connections; report how many the server left open and what the others got."""
    socks: list[socket.socket] = []
    connect_errors: list[int | None] = []
    for _ in range(n):
        s = _connect_retrying(path)
        if isinstance(s, int):
            connect_errors.append(s)
            break
        socks.append(s)
    # A refused connection becomes readable (the refusal line, then EOF); a held one stays silent.
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    answered: dict[int, dict[str, Any] | None] = {}
    deadline = time.monotonic() + settle
    grace = None  # once the expected number is answered, a short look for more
    while len(answered) < len(socks) and (left := deadline - time.monotonic()) > 0:
        if grace is None and len(answered) >= len(socks) - expect_silent:
            grace = deadline = time.monotonic() + 0.5
            continue
        for fd, _ in poller.poll(int(left * 1000)):
            if fd not in answered:
                answered[fd] = _first_line(by_fd[fd])
                poller.unregister(fd)
    replies = [r for r in answered.values() if r is not None]
    out = {
        "opened": len(socks),
        "silent": len(socks) - len(answered),
        "answered": len(answered),
        "connect_errors": connect_errors,
        "codes": sorted({r["code"] for r in replies if r.get("code")}),
        "errors": sorted({r["error"] for r in replies if r.get("error")}),
    }
    by_fd.clear()
    return out | {"_socks": socks}  # kept open by the caller until released


class Holder:
    """A child process, as ``uid``, holding idle control connections until :meth:`release`.

    ``result`` says how many connections it opened, how many the daemon left
    silent (held) and the codes/messages of the refusals it got. It waits up to
    ``settle`` seconds for answers, or half a second more once all but
    ``expect_silent`` connections were answered.
    """

    def __init__(
        self,
        path: str,
        uid: int,
        gid: int,
        n: int,
        *,
        groups: tuple[int, ...] = (),
        settle: float = 5.0,
        expect_silent: int = 0,
    ) -> None:
        r_res, w_res = os.pipe()
        r_go, w_go = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r_res)
                os.close(w_go)
                for fd in _RELEASE_FDS:
                    os.close(fd)
                _drop(uid, gid, groups)
                res = _hold(path, n, settle, expect_silent)
                socks = res.pop("_socks")
                os.write(w_res, json.dumps(res).encode())
                os.close(w_res)
                os.read(r_go, 1)  # until the parent releases us
                for s in socks:
                    s.close()
            finally:
                os._exit(0)
        os.close(w_res)
        os.close(r_go)
        self.pid = pid
        self._go = w_go
        _RELEASE_FDS.add(w_go)
        data = _read_all(r_res)
        os.close(r_res)
        self.result: dict[str, Any] = json.loads(data)

    def release(self) -> None:
        """Let the child close its connections and exit."""
        if self._go >= 0:
            _RELEASE_FDS.discard(self._go)
            os.close(self._go)
            self._go = -1
            os.waitpid(self.pid, 0)


def request_as(
    path: str, uid: int, gid: int, request: dict[str, Any] | None = None, groups: tuple[int, ...] = ()
) -> dict[str, Any]:
    """One request from a child running as uid/gid; the decoded reply (or ``os_error``/``closed``)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for fd in _RELEASE_FDS:
                os.close(fd)
            _drop(uid, gid, groups)
            os.write(w, json.dumps(_request(path, request or STATUS)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = _read_all(r)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)
