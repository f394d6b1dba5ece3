"""Who may run which control command.

The socket itself is mode 0660 and owned by ``socket_group``, so only root
and that group can connect at all. On top of that every request is checked
against the peer's credentials (SO_PEERCRED and SO_PEERGROUPS):
read commands for members of ``socket_group``; commands that change state for
root, the daemon's own user and members of ``admin_group``.
"""

from __future__ import annotations

import grp
import os
import socket
import struct
from typing import Any

from ctd.control.protocol import Peer
from ctd.errors import ConfigError, PermissionDenied

READ = "read"
ADMIN = "admin"


def resolve_gid(name: str | None, where: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"no such group {name!r}", where) from None


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
_MAX_GROUPS = 256


def peer_credentials(sock: Any) -> Peer:
    """The pid, uid, gid and supplementary groups of the process connected to a Unix socket.

    Groups come from the kernel (SO_PEERGROUPS), not from /proc, so the check
    also works under ``ProtectProc=invisible`` and cannot race a reused pid.
    """
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _MAX_GROUPS)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    except OSError:
        groups = ()
    return Peer(pid=pid, uid=uid, gid=gid, groups=tuple(groups))


def peer_groups(peer: Peer) -> set[int]:
    """The peer's primary and supplementary groups (from SO_PEERGROUPS at connect time)."""
    return {peer.gid, *peer.groups}


class AccessPolicy:
    def __init__(self, socket_group: str | None, admin_group: str | None) -> None:
        self.read_gid = resolve_gid(socket_group, "$.daemon.socket_group")
        if self.read_gid is None:
            self.read_gid = os.getgid()  # the socket keeps the daemon's group
        self.admin_gid = resolve_gid(admin_group, "$.daemon.admin_group")

    def level(self, peer: Peer) -> str | None:
        if peer.uid in (0, os.getuid()):
            return ADMIN
        groups = peer_groups(peer)
        if self.admin_gid is not None and self.admin_gid in groups:
            return ADMIN
        if self.read_gid in groups:
            return READ
        return None

    def check(self, needed: str, cmd: str, peer: Peer) -> None:
        level = self.level(peer)
        if level == ADMIN or (level == READ and needed == READ):
            return
        if level is None:
            raise PermissionDenied(f"permission denied: uid {peer.uid} may not use the control socket")
        raise PermissionDenied(
            f"permission denied: {cmd!r} changes the daemon's state and needs root or the admin group"
        )
