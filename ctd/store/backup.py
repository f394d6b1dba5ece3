"""Online backups and on-demand integrity checks, on a read connection of their own.

Both run beside the store actor, never in its worker: the backup copies the
database with SQLite's online backup API in one step from a second connection,
which in WAL mode is a read transaction — the store's writer goes on
committing meanwhile (readers never block the writer), and the copy is the
snapshot the read began with. The copy is written to a temporary file next to
the target, checked (``quick_check``, ctd's schema), synced and renamed into
place, so a backup file either is whole or does not exist.

Backups written without a path go to ``state_dir/backups/``, named by their
UTC time. That directory is what "a ledger backup exists" means at start: a
missing or empty database next to one is refused rather than silently
replaced by an empty store (``ctd.store.preflight``).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from ctd.store import tally
from ctd.store.schema import APPLICATION_ID, MIGRATIONS

BACKUP_DIR = "backups"
BACKUP_PREFIX = "ctd-"
BACKUP_SUFFIX = ".db"
CHECK_ROWS = 100  # problems integrity_check reports at most


def backup_dir(state_dir: str) -> str:
    return os.path.join(state_dir, BACKUP_DIR)


def backups(state_dir: str) -> list[str]:
    """The ledger backups in ``state_dir/backups`` (non-empty ``ctd-*.db`` files), oldest first."""
    directory = backup_dir(state_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.startswith(BACKUP_PREFIX) and name.endswith(BACKUP_SUFFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isfile(path) and os.path.getsize(path) > 0:
                found.append(path)
        except OSError:
            continue
    return sorted(found)


def newest_backup(state_dir: str) -> str | None:
    found = backups(state_dir)
    return found[-1] if found else None


def default_target(state_dir: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return os.path.join(backup_dir(state_dir), f"{BACKUP_PREFIX}{stamp}{BACKUP_SUFFIX}")


def _uri(path: str, mode: str) -> str:
    return f"{Path(path).absolute().as_uri()}?mode={mode}"


def online_backup(db: str, target: str | None, keep: int | None = None) -> dict[str, Any]:
    """Copy the database at ``db`` to ``target`` (None: a new file in ``state_dir/backups``).

    Refuses to overwrite an existing file. ``keep``: afterwards, remove all but the
    ``keep`` newest backups in ``state_dir/backups``. Raises OSError/sqlite3.Error.
    """
    state_dir = os.path.dirname(os.path.abspath(db))
    started = time.monotonic()
    if target is None:
        os.makedirs(backup_dir(state_dir), mode=0o750, exist_ok=True)
        target = default_target(state_dir)
    target = os.path.abspath(target)
    if os.path.lexists(target):
        raise FileExistsError(17, "a file of that name exists (backups never overwrite)", target)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=".ctd-backup-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        src = sqlite3.connect(_uri(db, "rw"), uri=True)
        try:
            dst = sqlite3.connect(tmp)
            try:
                # One step: one read transaction, so the copy is one consistent snapshot and a
                # commit by the store's writer meanwhile neither waits nor restarts the copy.
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
                problems = [r[0] for r in dst.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(f"the copy fails its quick check: {problems[0]}")
                counts = tally.read(dst)
                version = dst.execute("PRAGMA user_version").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        try:
            os.link(tmp, target)  # fails if the target appeared meanwhile: never overwrite
        except OSError as exc:
            if isinstance(exc, FileExistsError) or os.path.lexists(target):
                raise
            os.rename(tmp, target)  # a filesystem without hard links
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _sync_dir(directory)
    removed = _prune(state_dir, keep) if keep is not None else []
    return {
        "path": target,
        "bytes": os.path.getsize(target),
        "seconds": round(time.monotonic() - started, 3),
        "schema": version,
        "indicators": counts.indicators.get("total", 0),
        "ledger_rows": sum(sum(v["counts"].values()) for v in counts.ledgers.values()),
        "removed": removed,
    }


def _sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(state_dir: str, keep: int) -> list[str]:
    found = backups(state_dir)
    old = found[: max(0, len(found) - keep)]
    for path in old:
        os.unlink(path)
    return old


_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _check(conn: sqlite3.Connection) -> list[str]:
    conn.execute("BEGIN")  # one snapshot for every query below
    problems = [" ".join(r[0].split()) for r in conn.execute(f"PRAGMA integrity_check({CHECK_ROWS})")]
    if problems == ["ok"]:
        problems = []
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID or version != len(MIGRATIONS):
        problems.append(f"schema version {version}, application id {app_id:#x}: not this ctd's schema")
    elif not problems and tally.read(conn) != tally.recount(conn):
        problems.append("the maintained counters differ from a recount (ctdctl status shows wrong counts)")
    conn.execute("COMMIT")
    return problems


def integrity_check(db: str) -> dict[str, Any]:
    """``PRAGMA integrity_check`` and the maintained counters against a recount, on one read snapshot."""
    started = time.monotonic()
    conn = sqlite3.connect(_uri(db, "rw"), uri=True, isolation_level=None)
    try:
        try:
            problems = _check(conn)
        except sqlite3.DatabaseError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise
            problems = [str(exc)]  # so damaged that the check itself could not read on
    finally:
        conn.close()
    return {
        "ok": not problems,
        "problems": problems,
        "seconds": round(time.monotonic() - started, 3),
        "path": db,
    }
