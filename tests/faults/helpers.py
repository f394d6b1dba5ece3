"""Small, general helpers for the fault-injection suite (shared by its test modules; keep it small).

* ``tmpfs(size)``: a size-limited tmpfs to fill up (the test is skipped where mounting is impossible,
  and FAILS when ``$CI`` is set: the suite must run in CI, which runs as root);
* ``fill(directory)`` / ``Filler.free()``: take every free byte, give it back;
* ``overwrite``, ``damage_pages``: damage a file in place;
* ``run_ctd``, ``one_line_error``: run ``ctd`` and check a start that fails says one line and the
  documented exit status;
* ``store_values``, ``no_duplicates``: read a database back for the invariants;
* ``RecordingDestination``: an incremental destination that appends every push and withdrawal to a
  JSON-lines file (``adapter = "tests.faults.helpers:RecordingDestination"``), so a test can count
  what was delivered how often, across daemon restarts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from ctd.model import ActionSpec, Adapter, PushResult, ShareItem
from tests.daemonproc import REPO, env

IN_CI = bool(os.environ.get("CI"))


def impossible(reason: str) -> None:
    """Skip a fault that cannot be staged here; in CI that is a failure (the suite must run there)."""
    if IN_CI:
        pytest.fail(f"cannot stage the fault in CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def tmpfs(size: str = "8m") -> Iterator[Path]:
    """A freshly mounted tmpfs of ``size`` (a short path: sockets may live there too)."""
    where = Path(tempfile.mkdtemp(prefix="ctdfs", dir="/tmp"))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        where.rmdir()
        impossible(f"cannot mount a tmpfs: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


class Filler:
    """The file that takes a filesystem's free space (see ``fill``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def free(self) -> None:
        self.path.unlink(missing_ok=True)


def fill(directory: Path, chunk: int = 1 << 16) -> Filler:
    """Write a file in ``directory`` until the filesystem has no byte left."""
    path = directory / ".filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * chunk
        while chunk:
            try:
                os.write(fd, block[:chunk])
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                chunk //= 2  # the last partial blocks
    finally:
        os.close(fd)
    return Filler(path)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def page_size(db: Path) -> int:
    with open(db, "rb") as f:
        header = f.read(100)
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def damage_pages(db: Path, first: int, count: int, byte: int = 0xA5) -> None:
    """Overwrite ``count`` whole pages from page number ``first`` (1-based) with ``byte``."""
    size = page_size(db)
    overwrite(db, (first - 1) * size, bytes([byte]) * (size * count))


def checkpoint(db: Path) -> None:
    """Fold a WAL left by a killed daemon into the database file (so damage to the file is what is read)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def run_ctd(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctd", *args], capture_output=True, text=True, cwd=cwd, env=env(), timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """A start that failed: the documented exit status, no traceback, and one plain (non-JSON) line that
    names what it was given in ``needles`` (a path, a cause)."""
    out = result.stderr + result.stdout
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{out}"
    assert "Traceback" not in out and "ExceptionGroup" not in out, out
    plain = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(plain) == 1, plain
    for needle in needles:
        assert needle in plain[0], (needle, plain[0])
    return plain[0]


def store_values(db: Path) -> list[tuple[str, str]]:
    """Every (type, value) in the store, as rows (duplicates would show twice)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(t, v) for t, v in conn.execute("SELECT type, value FROM indicator")]
    finally:
        conn.close()


def no_duplicates(rows: list[Any]) -> None:
    dups = [row for row, n in Counter(rows).items() if n > 1]
    assert not dups, dups[:10]


def counters_match(db: Path) -> None:
    """The counters `ctdctl status` shows equal a recount of the tables."""
    from ctd.store import tally

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert tally.read(conn) == tally.recount(conn)
    finally:
        conn.close()


# --- a destination that records what it is sent ----------------------------------------------------


class RecordingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    journal: str  # the JSON-lines file every call is appended to


class RecordingParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class RecordingDestination(Adapter):
    """An incremental destination that appends each push/retract (and its values) to ``journal``."""

    Config: ClassVar[type[msgspec.Struct]] = RecordingConfig
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="record", mode="incremental", params=RecordingParams, batch_size=50),
    }

    def _write(self, op: str, items: list[ShareItem]) -> PushResult:
        with open(self.config.journal, "a") as f:
            f.write(json.dumps({"op": op, "values": [i.value for i in items]}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return PushResult()

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        return self._write("push", items)

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        return self._write("retract", items)

    async def check(self) -> str:
        return "ok"


def journal(path: Path) -> Counter[tuple[str, str]]:
    """How often each (op, value) was delivered to a RecordingDestination."""
    seen: Counter[tuple[str, str]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            seen.update((entry["op"], v) for v in entry["values"])
    return seen


__all__ = ["REPO"]
