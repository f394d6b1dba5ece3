"""Helpers of the destinations-and-pulls half of the fault suite: faulty loopback peers, the ledger read back.

(The disk/database half keeps its own in ``tests/faults/helpers.py``.)
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.daemonproc import DaemonProc


@contextlib.contextmanager
def _server(handle: object) -> Iterator[str]:
    """A loopback TCP server running ``handle(conn)`` per connection in a thread; yields its base URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            handle(conn)  # type: ignore[operator]

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def hanging_server() -> contextlib.AbstractContextManager[str]:
    """Accepts every connection and never answers (the request sits unread)."""
    return _server(lambda conn: None)


def dropping_server() -> contextlib.AbstractContextManager[str]:
    """Accepts, reads the request and closes the connection without a reply."""

    def drop(conn: socket.socket) -> None:
        conn.settimeout(1)
        with contextlib.suppress(OSError):
            conn.recv(65536)
        conn.close()

    return _server(drop)


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A loopback port that refuses connections (bound, never listening: nobody else gets it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def db(d: DaemonProc) -> Path:
    return d.dir / "var" / "ctd.db"


def read(d: DaemonProc, sql: str, *params: object) -> list[tuple]:
    """A read-only query of the daemon's database (it may be running: WAL readers do not block it)."""
    conn = sqlite3.connect(f"file:{db(d)}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def ledger(d: DaemonProc, sharing: str) -> dict[str, str]:
    """value -> ledger state of one sharing (``+staged`` while it waits for its apply step)."""
    return {
        v: st + ("+staged" if staged else "")
        for v, st, staged in read(
            d,
            "SELECT i.value, d.state, d.staged FROM delivery d JOIN indicator i ON i.id = d.iid "
            "JOIN sharing s ON s.id = d.shid WHERE s.name = ?",
            sharing,
        )
    }


def shared(d: DaemonProc, sharing: str) -> set[str]:
    return {v for v, st in ledger(d, sharing).items() if st == "shared"}


def sub_checkpoint(d: DaemonProc, source: str) -> dict | None:
    """The source's resume point, or None (no database yet, or no half-done pull)."""
    if not db(d).exists():
        return None
    try:
        rows = read(d, "SELECT sub FROM source WHERE name = ?", source)
    except sqlite3.Error:
        return None
    return json.loads(rows[0][0]) if rows and rows[0][0] else None


def daemon_up(d: DaemonProc) -> bool:
    """The process runs and answers `ctdctl status`."""
    return d.proc is not None and d.proc.poll() is None and d.ctl_rc("status") == 0


def kill(d: DaemonProc) -> None:
    """SIGKILL, and wait for the process (and its log file) to be gone."""
    assert d.proc is not None
    d.proc.kill()
    d.proc.wait()
    d._logf.close()
