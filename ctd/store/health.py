"""What a SQLite or disk error means for the daemon, and the store's health as ``ctdctl status`` shows it.

Errors are sorted by what the daemon does next (``ctd.errors``):

* ``StoreFull``: the disk under state_dir is full (SQLite's ``SQLITE_FULL``, an
  I/O error while the disk has no room left, ``ENOSPC``). Nothing is wrong with
  the data: the actor that asked backs off and retries; the daemon stays up.
* ``StoreDamaged``: SQLite found the file damaged (``SQLITE_CORRUPT``: "database
  disk image is malformed", ``SQLITE_NOTADB``). Retrying cannot help and writing
  on may make it worse: the store actor stops and the daemon reports itself
  degraded until the database is restored.
* any other ``StoreError``: retried with backoff like an outage.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time

import msgspec

from ctd.errors import StoreDamaged, StoreError, StoreFull

# Below this much free space an I/O error is taken for a full disk: SQLite grows
# the WAL and its shared-memory index in steps of pages and 32 KiB.
FULL_BELOW = 1 << 20

_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26
_SQLITE_READONLY, _SQLITE_PERM = 8, 3

OK, FULL, DAMAGED = "ok", "full", "damaged"


def free_bytes(directory: str) -> int | None:
    """Bytes an unprivileged process may still write under ``directory`` (None if it cannot be told)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(directory: str) -> bool:
    free = free_bytes(directory)
    return free is not None and free < FULL_BELOW


def full_message(directory: str, detail: str) -> str:
    return f"state_dir full: {directory} has no space left ({detail})"


def classify(exc: BaseException, path: str) -> StoreError:
    """The store error ``exc`` (raised while working on the database at ``path``) stands for."""
    directory = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreFull(full_message(directory, exc.strerror or str(exc)))
        return StoreError(f"{exc.filename or path}: {exc.strerror or exc}")
    code = getattr(exc, "sqlite_errorcode", None) or 0
    primary = code & 0xFF
    if primary == _SQLITE_FULL or (primary == _SQLITE_IOERR and disk_full(directory)):
        return StoreFull(full_message(directory, str(exc)))
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreDamaged(f"database damaged: {path}: {exc}")
    if primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN):
        return StoreError(f"database {path}: {exc}")
    if primary == _SQLITE_IOERR:
        return StoreError(f"database {path}: {exc}")
    return StoreError(f"database error: {exc}")


class Health(msgspec.Struct, kw_only=True):
    """The store's condition: ``ok``, ``full`` (writes fail for want of space) or ``damaged`` (stopped)."""

    state: str = OK
    problem: str | None = None
    since: float | None = None

    def set(self, state: str, problem: str | None) -> bool:
        """Move to ``state``; True if that is a change (worth one log line and a systemd STATUS=)."""
        if self.state == DAMAGED or (state == self.state and problem == self.problem):
            return False  # damaged stays damaged: only a restart after a restore clears it
        changed = state != self.state
        self.state, self.problem = state, problem
        if changed:
            self.since = time.time() if state != OK else None
        return changed
