"""``ctd check-config --deep``: what ``ctd run`` would refuse, checked without starting it.

Beyond the file's validity: state_dir (filesystem, a directory, writable),
whether another ctd holds it, the database's header and schema (read-only,
never creating the ``-wal``/``-shm`` files a root-owned check would leave
behind for the service user to trip over), the control socket (its
directory, whether a daemon already answers there) and the configured groups.
Each failed check carries the exit status ``ctd run`` would end with.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import socket as stdsocket
import stat
from typing import NamedTuple

from ctd import exits
from ctd.config import Config
from ctd.daemon.startup import LOCK_FILE, VIRTUAL_FS, filesystem_of
from ctd.errors import StartupError
from ctd.store import check_database_file

PROBE_TIMEOUT = 2.0


class Check(NamedTuple):
    what: str
    ok: bool
    detail: str
    code: int = exits.OK


def _fail(what: str, detail: str, code: int) -> Check:
    return Check(what, False, detail, code)


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and path != "/":
        path = os.path.dirname(path)
    return path


def check_directory(path: str, what: str) -> Check:
    """A directory ctd can create (or has) and write, on a filesystem that can hold files."""
    path = os.path.abspath(path)
    fstype = filesystem_of(path)
    if fstype in VIRTUAL_FS:
        return _fail(what, f"{path} is on a {fstype} filesystem, which cannot hold ctd's files", exits.FSTYPE)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return _fail(what, f"{path} is not a directory", exits.CANTCREAT)
        target, verb = path, "writable"
    else:
        target, verb = _nearest_existing(os.path.dirname(path)), "to be created"
    if not os.access(target, os.W_OK | os.X_OK):
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return _fail(what, f"{target} is on a read-only filesystem", exits.CANTCREAT)
        return _fail(what, f"{target} is not writable by uid {os.getuid()}", exits.NOPERM)
    return Check(what, True, f"{path}: {verb}, on {fstype or 'an unknown filesystem'}")


def check_lock(state_dir: str) -> Check:
    path = os.path.join(os.path.abspath(state_dir), LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Check("lock", True, f"{path}: free")
    except OSError as exc:
        return _fail("lock", f"{path}: {exc.strerror}", exits.NOPERM)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        who = f" (pid {pid})" if pid.isdigit() else ""
        return _fail("lock", f"another ctd{who} is using {state_dir}: stop it first", exits.TEMPFAIL)
    finally:
        os.close(fd)
    return Check("lock", True, f"{path}: free")


def check_database(state_dir: str) -> Check:
    path = os.path.join(os.path.abspath(state_dir), "ctd.db")
    try:
        note = check_database_file(path)
    except StartupError as exc:
        return _fail("database", str(exc), exc.exit_code)
    return Check("database", True, f"{path}: {note}")


def check_socket(path: str) -> Check:
    """The control socket's directory is usable and no daemon answers at the socket yet."""
    path = os.path.abspath(path)
    parent = check_directory(os.path.dirname(path), "socket directory")
    if not parent.ok:
        return parent._replace(what="socket")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Check("socket", True, f"{path}: free")
    if not stat.S_ISSOCK(st.st_mode):
        return _fail("socket", f"{path} exists and is not a socket", exits.CANTCREAT)
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return Check("socket", True, f"{path}: a stale socket (removed at start)")
        if exc.errno == errno.EACCES:
            return _fail("socket", f"{path}: {exc.strerror}", exits.NOPERM)
        return _fail("socket", f"{path}: another daemon may hold it ({exc.strerror})", exits.TEMPFAIL)
    finally:
        probe.close()
    return _fail("socket", f"another daemon is already listening on {path}", exits.TEMPFAIL)


def check_group(name: str | None, key: str) -> Check:
    if name is None:
        return Check(key, True, "not set")
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        return _fail(key, f"no group named {name!r}", exits.CONFIG)
    if key == "socket_group" and os.geteuid() != 0 and gid not in (os.getegid(), *os.getgroups()):
        return _fail(key, f"uid {os.getuid()} is not in group {name!r}: it cannot give the socket to it", exits.NOPERM)
    return Check(key, True, f"{name} (gid {gid})")


def deep_checks(cfg: Config) -> list[Check]:
    d = cfg.daemon
    state = check_directory(d.state_dir, "state_dir")
    out = [state]
    if state.ok:
        lock = check_lock(d.state_dir)
        out.append(lock)
        if lock.ok:
            out.append(check_database(d.state_dir))
    out += [
        check_socket(d.socket),
        check_group(d.socket_group, "socket_group"),
        check_group(d.admin_group, "admin_group"),
    ]
    return out


def report(checks: list[Check]) -> tuple[str, int]:
    """The lines to print, and the exit status: the first failure's, 0 if all passed."""
    lines = [f"{'ok' if c.ok else 'FAIL':<5} {c.what}: {c.detail}" for c in checks]
    failed = [c for c in checks if not c.ok]
    return "\n".join(lines), (failed[0].code if failed else exits.OK)
