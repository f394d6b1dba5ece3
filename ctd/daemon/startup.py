"""Before the daemon opens anything: a state_dir it can use, and one ctd per state_dir.

``claim_state_dir`` creates state_dir if needed, refuses one on a filesystem
that cannot hold a database (``/proc``, ``/sys``...), one it cannot write, and
one another ctd is using: it holds ``state_dir/ctd.lock`` with an exclusive
``flock`` for as long as the daemon (or ``ctd run --once``) runs. Two daemons on
one database would both plan and deliver from the same ledger; ``--once`` next
to a running daemon would rewrite the daemon's destinations behind its back.

Each refusal is a ``StartupError``: one line naming the path and the cause,
and the exit status of ``ctd.exits``. ``startup_error`` turns what else can end
a start (a socket another daemon answers on, an ``OSError`` on a path) into one
too, so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ctd import exits
from ctd.control.server import SocketInUseError
from ctd.errors import ConfigError, StartupError, StoreError
from ctd.policy import real_cause

LOCK_FILE = "ctd.lock"
# Filesystems that exist in memory only, or are windows onto the kernel: nothing ctd keeps can live there.
VIRTUAL_FS = frozenset(
    {
        "proc",
        "sysfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "efivarfs",
        "binfmt_misc",
        "autofs",
        "nsfs",
    }
)


def filesystem_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem ``path`` is (or would be created) on; None if it cannot be told."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    probe = os.path.realpath(probe)
    best, fstype = "", None
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = probe == mount or probe.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, fields[sep + 1]
    except OSError:
        return None
    return fstype


def check_filesystem(path: str, what: str) -> None:
    fstype = filesystem_of(path)
    if fstype in VIRTUAL_FS:
        raise StartupError(
            f"{what} {path} is on a {fstype} filesystem, which cannot hold ctd's files: "
            "choose a directory on a disk ([daemon] in the config)",
            exits.FSTYPE,
        )


def check_socket_directory(socket: str) -> None:
    check_filesystem(os.path.dirname(os.path.abspath(socket)), "the control socket's directory")


def path_error(path: str, what: str, exc: OSError) -> StartupError:
    """One line and an exit status for an ``OSError`` on one of ctd's own paths."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StartupError(f"{what} {path}: {reason} (ctd runs as uid {os.getuid()})", exits.NOPERM)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return StartupError(f"{what} {path}: {reason}", exits.IOERR)
    return StartupError(f"{what} {path}: {reason}", exits.CANTCREAT)


def prepare_state_dir(state_dir: str) -> str:
    """state_dir, created (0750) if missing, checked to be a writable directory on a real filesystem."""
    state_dir = os.path.abspath(state_dir)
    check_filesystem(state_dir, "state_dir")
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise path_error(state_dir, "cannot create state_dir", exc) from exc
    if not os.path.isdir(state_dir):
        raise StartupError(f"state_dir {state_dir} is not a directory", exits.CANTCREAT)
    if not os.access(state_dir, os.W_OK | os.X_OK):
        if os.statvfs(state_dir).f_flag & os.ST_RDONLY:
            raise StartupError(f"state_dir {state_dir} is on a read-only filesystem", exits.CANTCREAT)
        raise StartupError(f"state_dir {state_dir} is not writable by uid {os.getuid()}", exits.NOPERM)
    return state_dir


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextmanager
def claim_state_dir(state_dir: str, *, purpose: str = "daemon") -> Iterator[str]:
    """Hold ``state_dir/ctd.lock`` exclusively while the block runs; ``StartupError`` if another ctd holds it."""
    state_dir = prepare_state_dir(state_dir)
    path = os.path.join(state_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise path_error(path, "cannot create the lock file", exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            hint = (
                "; ask it with `ctdctl sync` / `ctdctl sharing sync` instead of running --once"
                if purpose == "once"
                else ""
            )
            raise StartupError(
                f"another ctd{_holder(fd)} is using state_dir {state_dir} (it holds {path}){hint}",
                exits.TEMPFAIL,
            ) from None
        try:  # who holds it, for the message above; a full disk must not stop the start
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield state_dir
    finally:
        os.close(fd)  # releases the lock


def startup_error(exc: BaseException, state_dir: str, socket: str) -> StartupError | None:
    """The one-line ``StartupError`` a failed start stands for (None: an unexpected error, a bug)."""
    cause = real_cause(exc)
    match cause:
        case StartupError():
            return cause
        case SocketInUseError():
            return StartupError(str(cause), exits.TEMPFAIL)
        case ConfigError():
            return StartupError(str(cause), exits.CONFIG)
        case StoreError():
            return StartupError(f"the store at {state_dir}: {cause}", exits.IOERR)
        case OSError():
            where = cause.filename if isinstance(cause.filename, str) else socket
            return path_error(where, "cannot use", cause)
    return None
