"""Control socket security: who may connect, read, and change state."""

from __future__ import annotations

import grp
import json
import os
import socket
import stat

import pytest

from ctd.control.access import ADMIN, READ, AccessPolicy
from ctd.control.protocol import Peer
from ctd.errors import PermissionDenied
from tests.daemonproc import DaemonProc, short_tmpdir

NOBODY = 65534
NOGROUP = grp.getgrgid(65534).gr_name if any(g.gr_gid == 65534 for g in grp.getgrall()) else None
NO_PID = 2**22 + 12345  # no such process: only the primary group counts


def peer(uid: int, gid: int) -> Peer:
    return Peer(pid=NO_PID, uid=uid, gid=gid)


class TestPolicy:
    def test_root_is_admin(self):
        """root may run every command."""
        assert AccessPolicy(None, None).level(peer(0, 0)) == ADMIN

    def test_socket_group_member_reads_only(self):
        """A member of socket_group may read but not reload."""
        pol = AccessPolicy(NOGROUP, None)
        pol.check(READ, "status", peer(NOBODY, NOBODY))
        with pytest.raises(PermissionDenied, match="needs root or the admin group"):
            pol.check(ADMIN, "reload", peer(NOBODY, NOBODY))

    def test_admin_group_member_may_reload(self):
        """A member of admin_group may run admin commands."""
        pol = AccessPolicy(None, NOGROUP)
        pol.check(ADMIN, "reload", peer(NOBODY, NOBODY))

    def test_outsider_denied(self):
        """A uid in neither group may not even read."""
        pol = AccessPolicy(NOGROUP, None)
        with pytest.raises(PermissionDenied, match="may not use the control socket"):
            pol.check(READ, "status", peer(NOBODY, 12345))

    def test_supplementary_groups_count(self):
        """Supplementary groups of the peer are honoured."""
        pol = AccessPolicy(NOGROUP, None)
        assert pol.level(Peer(pid=NO_PID, uid=NOBODY, gid=12345, groups=(4, 65534))) == READ


def as_user(sock_path: str, uid: int, gid: int, request: dict, groups: tuple[int, ...] = ()) -> dict:
    """Send one request from a child process running as uid/gid with the given supplementary groups."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, talk, report, exit without running any Python cleanup
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            try:
                s.connect(sock_path)
            except OSError as exc:
                out = {"connect_error": exc.errno}
            else:
                s.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                out = json.loads(data)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(os.getuid() != 0 or NOGROUP is None, reason="needs root and a group with gid 65534")
class TestRealSocket:
    @pytest.fixture
    def daemon(self):
        d = DaemonProc(short_tmpdir(), "")
        os.chmod(d.dir, 0o755)  # let the unprivileged clients reach the run directory
        run = d.dir / "run"
        d.socket = run / "ctd.sock"
        d.write_config(f'[daemon]\nstate_dir = "{d.dir}/var"\nsocket = "{d.socket}"\nsocket_group = "{NOGROUP}"\n')
        try:
            d.start().wait_ready()
            yield d
            d.stop()
        finally:
            d.cleanup()

    def test_socket_mode_and_group(self, daemon):
        """The socket is 0660 and owned by socket_group; its new directory is 0750 for that group."""
        st = os.stat(daemon.socket)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534
        dst = os.stat(daemon.socket.parent)
        assert stat.S_IMODE(dst.st_mode) == 0o750 and dst.st_gid == 65534

    def test_outsider_cannot_connect(self, daemon):
        """An unprivileged uid outside the socket group is refused."""
        out = as_user(str(daemon.socket), NOBODY, 12345, {"v": 1, "cmd": "status", "args": {}})
        assert out == {"connect_error": 13}  # EACCES

    def test_group_member_reads_but_cannot_reload(self, daemon):
        """A member of the socket group can read status but is refused reload, and the denial is audited."""
        ok = as_user(str(daemon.socket), NOBODY, NOBODY, {"v": 1, "cmd": "status", "args": {}})
        assert ok["ok"] is True and "indicators" in ok["data"]
        denied = as_user(str(daemon.socket), NOBODY, NOBODY, {"v": 1, "cmd": "reload", "args": {}})
        assert denied["ok"] is False and denied["code"] == "denied"
        assert "needs root or the admin group" in denied["error"]
        audits = [e for e in daemon.logs() if e.get("ctd_event") == "control_command" and e.get("cmd") == "reload"]
        assert audits and audits[-1]["allowed"] is False and audits[-1]["ctd_peer_uid"] == NOBODY

    def test_supplementary_group_member_reads(self, daemon):
        """A user whose supplementary groups include the socket group can read (kernel-reported groups)."""
        ok = as_user(str(daemon.socket), NOBODY, 12345, {"v": 1, "cmd": "status", "args": {}}, groups=(65534,))
        assert ok["ok"] is True
