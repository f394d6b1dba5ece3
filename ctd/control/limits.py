"""Admission to the control socket: connection caps, refusals, accept back-off.

Every connection costs the daemon a descriptor, and members of the read group
are not trusted to be gentle: without caps ~1,000 idle connections exhaust
the process's descriptors and take the EDL server, the store and the sources
down with it. systemd/ctd.service sizes ``LimitNOFILE=`` from these caps.

Resource handling:
    At most ``total`` control connections are open at once and ``per_uid``
    per peer uid (SO_PEERCRED). ``reserved`` of the total are kept for root and
    the daemon's own uid, so read-group members together cannot lock out
    ``systemctl reload`` (ctdctl as the daemon's user) or an admin using sudo.
    A connection over a cap is accepted, sent one ``busy`` error line and
    closed at once: it holds a descriptor for no longer than that write.

Error handling:
    ``accept()`` failing for want of descriptors or memory (EMFILE, ENFILE,
    ENOBUFS, ENOMEM) is retried after a back-off growing from 0.1 s to 2 s, with
    one warning a minute (counting the failures it did not log) and one info
    line once accepting works again (``ctd.accept``, shared with the EDL
    server). Any other accept error propagates. Refusals log one warning per
    uid a minute, likewise counted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

import msgspec
import structlog
import trio

from ctd.accept import AcceptBackoff, LogLimiter
from ctd.control.access import peer_credentials
from ctd.control.protocol import CODE_BUSY, Peer, error_reply

__all__ = ["DEFAULT_LIMITS", "ConnectionLimits", "serve_admitted"]

MAX_CONNECTIONS: Final = 64
MAX_PER_UID: Final = 16  # ctdctl uses one at a time; room for scripts and monitoring in parallel
RESERVED: Final = 8  # of MAX_CONNECTIONS, only for root and the daemon's own uid

REFUSE_TIMEOUT: Final = 1.0  # a fresh socket's buffer takes the refusal line at once; this is a backstop

log = structlog.get_logger("ctd.control")

Handler = Callable[[trio.SocketStream, Peer], Awaitable[None]]


class ConnectionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Caps on concurrent control connections (see the module docstring)."""

    total: int = MAX_CONNECTIONS
    per_uid: int = MAX_PER_UID
    reserved: int = RESERVED

    def __post_init__(self) -> None:
        if min(self.total, self.per_uid, self.reserved) < 0 or self.reserved >= self.total:
            raise ValueError("connection limits must be >= 0, with reserved < total")


DEFAULT_LIMITS: Final = ConnectionLimits()


class Admission:
    """Counts open connections, in total and per uid, and says who is refused and why."""

    def __init__(self, limits: ConnectionLimits, privileged: frozenset[int]) -> None:
        self.limits = limits
        self.privileged = privileged
        self.active = 0
        self._by_uid: Counter[int] = Counter()

    def admit(self, uid: int) -> str | None:
        """Take a slot for ``uid``; the refusal message instead when a cap is reached."""
        lim = self.limits
        if self._by_uid[uid] >= lim.per_uid:
            return f"too many control connections from uid {uid} (limit {lim.per_uid}); close some and retry"
        if uid in self.privileged:
            if self.active >= lim.total:
                return f"too many control connections (limit {lim.total}); retry shortly"
        elif self.active >= lim.total - lim.reserved:
            return (
                f"too many control connections (limit {lim.total - lim.reserved} for unprivileged peers); retry shortly"
            )
        self.active += 1
        self._by_uid[uid] += 1
        return None

    def release(self, uid: int) -> None:
        self.active -= 1
        self._by_uid[uid] -= 1
        if self._by_uid[uid] <= 0:
            del self._by_uid[uid]  # the table only holds uids with open connections


async def serve_admitted(
    listener: trio.SocketListener,
    handler: Handler,
    limits: ConnectionLimits,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept connections on ``listener`` and run ``handler(stream, peer)`` for those within the caps.

    The handler's stream is closed and its slot released when it returns.
    """
    admission = Admission(limits, frozenset({0, os.getuid()}))
    refusals = LogLimiter()
    backoff = AcceptBackoff(
        log, what="control socket", event="control", context=lambda: {"control_connections": admission.active}
    )
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream = await backoff.accept(listener)
            try:
                peer = peer_credentials(stream.socket)
            except OSError:
                await trio.aclose_forcefully(stream)
                continue
            refusal = admission.admit(peer.uid)
            if refusal is None:
                nursery.start_soon(_run, handler, stream, peer, admission)
            else:
                await _refuse(stream, peer, refusal, refusals)


async def _run(handler: Handler, stream: trio.SocketStream, peer: Peer, admission: Admission) -> None:
    try:
        await handler(stream, peer)
    finally:
        admission.release(peer.uid)
        await trio.aclose_forcefully(stream)


async def _refuse(stream: trio.SocketStream, peer: Peer, message: str, refusals: LogLimiter) -> None:
    """Answer ``busy`` and close, inline: a refused connection must not cost a task or a slot."""
    held = refusals.check(peer.uid)
    if held is not None:
        log.warning(
            "control connection refused",
            ctd_event="control_refused",
            ctd_peer_uid=peer.uid,
            peer_pid=peer.pid,
            reason=message,
            suppressed=held,
        )
    try:
        with trio.move_on_after(REFUSE_TIMEOUT):
            await stream.send_all(error_reply(message, CODE_BUSY))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client is gone already
    finally:
        await trio.aclose_forcefully(stream)
