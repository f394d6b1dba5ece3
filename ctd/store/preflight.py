"""Before the store opens its database: is this file ctd's, whole, and of a schema this ctd knows?

SQLite opens almost anything: a missing or zero-length file becomes a new empty
database (the ledger of what was shared is then silently lost), a stray
``-wal`` is replayed into whatever file is there, and a damaged page is only
found when a query reads it — at which point the daemon has already reported
itself ready. So the file is looked at first, and each problem ends the start
with one line naming the path, the cause and what to do, and an exit status
from ``ctd.exits``:

=======================================================  =========  ==========
what                                                     status     checked by
=======================================================  =========  ==========
missing/empty/new database while ledger backups exist    66         the files
``ctd.db-wal`` without ``ctd.db`` (or with an empty one)  66         the files
not SQLite (garbage header), bad page size, truncated    65         the header
another program's database, not ctd's                    65         SQLite
schema newer than this ctd                               76         SQLite
``PRAGMA quick_check`` fails                             65         SQLite
=======================================================  =========  ==========

A full disk is not an error here: it raises ``StoreFull`` and the store waits
for space (``ctd.store.actor``).
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

import structlog

from ctd import exits
from ctd.errors import StartupError, StoreDamaged, StoreFull
from ctd.store import health
from ctd.store.backup import newest_backup
from ctd.store.schema import APPLICATION_ID, MIGRATIONS

log = structlog.get_logger("ctd.store")

HEADER = b"SQLite format 3\x00"
RESTORE_HINT = "see docs/operations.md, Restore"
QUICK_CHECK_ROWS = 5


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _os_error(path, exc) from exc


def _os_error(path: str, exc: OSError) -> StartupError:
    code = exits.NOPERM if isinstance(exc, PermissionError) else exits.IOERR
    return StartupError(f"cannot read the database {path}: {exc.strerror or exc}", code)


def check_database(path: str, *, quick_check: bool = True) -> None:
    """Raise ``StartupError`` if the database at ``path`` must not be opened (``StoreFull``: wait for space)."""
    state_dir = os.path.dirname(os.path.abspath(path))
    size = _size(path)
    wal = _size(path + "-wal") or 0
    if not size:
        _no_database(path, state_dir, size, wal)
        return
    _check_header(path, _header(path), size, wal)
    _check_contents(path, state_dir, quick_check, f"file:{_quoted(path)}?mode=rw")


def check_database_file(path: str) -> str:
    """What ``check_database`` can tell without writing anything (``ctd check-config --deep``): a note
    on what is there, or ``StartupError``. No quick check, and the file is opened immutable, so no
    ``-wal``/``-shm`` is created (by root, for the service's user to trip over)."""
    state_dir = os.path.dirname(os.path.abspath(path))
    size = _size(path)
    wal = _size(path + "-wal") or 0
    if not size:
        _no_database(path, state_dir, size, wal)
        return "none yet: a new store is created at start"
    _check_header(path, _header(path), size, wal)
    if wal:
        return f"{size} bytes, and a WAL of {wal} bytes from an unclean stop (recovered at start)"
    _check_contents(path, state_dir, False, f"file:{_quoted(path)}?mode=ro&immutable=1")
    return f"{size} bytes, a ctd database"


def _quoted(path: str) -> str:
    return quote(os.path.abspath(path))


def _header(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError as exc:
        raise _os_error(path, exc) from exc


def _no_database(path: str, state_dir: str, size: int | None, wal: int) -> None:
    """No database yet (missing or zero-length): a new store, unless a WAL or a backup says there was one."""
    what = "missing" if size is None else "empty (0 bytes)"
    if wal:
        raise StartupError(
            f"{path}-wal ({wal} bytes) lies there but the database {path} is {what}: the database was removed "
            f"or truncated, and opening it would replay that log into a new file. Move {path}-wal and {path}-shm "
            f"away, then restore a backup ({RESTORE_HINT})",
            exits.NOINPUT,
        )
    _refuse_if_backups(path, state_dir, what)
    if size == 0:
        log.warning("database was empty: starting a new store", ctd_event="store_new", path=path)


def _refuse_if_backups(path: str, state_dir: str, what: str) -> None:
    backup = newest_backup(state_dir)
    if backup is not None:
        raise StartupError(
            f"the database {path} is {what} but ledger backups exist in {os.path.dirname(backup)} "
            f"(newest: {os.path.basename(backup)}): a new store would forget what was shared. Restore the backup "
            f"({RESTORE_HINT}), or move the backups directory away to start with an empty store",
            exits.NOINPUT,
        )


def _check_header(path: str, header: bytes, size: int, wal: int) -> None:
    """The 100-byte SQLite header: magic string, page size, and (without a WAL) the file's length."""
    if len(header) < 100 or not header.startswith(HEADER):
        raise StartupError(
            f"{path} is not a SQLite database (its header is {header[:16]!r}): damaged or another program's file; "
            f"restore a backup ({RESTORE_HINT})",
            exits.DATAERR,
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise StartupError(
            f"{path} is damaged: its header gives an impossible page size ({page_size}); restore a backup "
            f"({RESTORE_HINT})",
            exits.DATAERR,
        )
    # The page count in the header is valid when its "version-valid-for" equals the change counter.
    # A WAL left by a crash may hold pages a checkpoint had not yet written: then SQLite judges.
    pages = int.from_bytes(header[28:32], "big")
    if not wal and header[24:28] == header[92:96] and (pages * page_size > size or size % page_size):
        raise StartupError(
            f"{path} is truncated: {size} bytes, its header says {pages * page_size}; restore a backup "
            f"({RESTORE_HINT})",
            exits.DATAERR,
        )


def _check_contents(path: str, state_dir: str, quick_check: bool, uri: str) -> None:
    """Open it with SQLite on a connection of its own: whose it is, its schema version, a quick check."""
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise _sqlite_startup_error(path, exc) from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        )
        if app_id not in (0, APPLICATION_ID):
            raise StartupError(
                f"{path} is not a ctd database (its application id is {app_id:#x}): another program's file; "
                f"point [daemon].state_dir elsewhere or restore a backup ({RESTORE_HINT})",
                exits.DATAERR,
            )
        if version > len(MIGRATIONS):
            raise StartupError(
                f"{path} has schema version {version}, newer than this ctd knows ({len(MIGRATIONS)}): it was "
                "written by a newer ctd. Run that ctd again, or restore the backup taken before the upgrade "
                f"({RESTORE_HINT})",
                exits.PROTOCOL,
            )
        if version == 0 and tables:
            raise StartupError(
                f"{path} is not a ctd database (it holds {', '.join(tables[:5])} but no ctd schema): another "
                "program's file; point [daemon].state_dir elsewhere",
                exits.DATAERR,
            )
        if version > 0 and not {"indicator", "source", "sighting"} <= set(tables):
            raise StartupError(
                f"{path} is not a ctd database, or is damaged: schema version {version} without ctd's tables; "
                f"restore a backup ({RESTORE_HINT})",
                exits.DATAERR,
            )
        if version == 0:
            _refuse_if_backups(path, state_dir, "new (no ctd schema yet)")
        if quick_check:
            problems = [r[0] for r in conn.execute(f"PRAGMA quick_check({QUICK_CHECK_ROWS})")]
            if problems != ["ok"]:
                detail = "; ".join(" ".join(p.split()) for p in problems)
                raise StartupError(
                    f"{path} is damaged (SQLite quick_check: {detail}): restore a backup ({RESTORE_HINT})",
                    exits.DATAERR,
                )
    except sqlite3.Error as exc:
        raise _sqlite_startup_error(path, exc) from exc
    finally:
        conn.close()


def _sqlite_startup_error(path: str, exc: sqlite3.Error) -> Exception:
    """A SQLite error met before the store opened: wait for space, or end the start with one line."""
    err = health.classify(exc, path)
    if isinstance(err, StoreFull):
        return err
    if isinstance(err, StoreDamaged):
        return StartupError(f"{path} is damaged ({exc}): restore a backup ({RESTORE_HINT})", exits.DATAERR)
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (3, 14):  # SQLITE_PERM, SQLITE_CANTOPEN: the file or its directory is not ours to write
        reason = _why_not_writable(path)
        return StartupError(f"cannot open the database {path}: {reason or exc}", exits.NOPERM)
    if code == 8:  # SQLITE_READONLY
        return StartupError(f"the database {path} is read-only: {exc}", exits.CANTCREAT)
    return StartupError(f"cannot open the database {path}: {exc}", exits.IOERR)


def _why_not_writable(path: str) -> str | None:
    for target in (path, os.path.dirname(os.path.abspath(path))):
        if os.path.exists(target) and not os.access(target, os.R_OK | os.W_OK):
            return f"{target} is not readable and writable by uid {os.getuid()}"
    return None
