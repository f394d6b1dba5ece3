"""The control server: ctdctl requests over a Unix stream socket.

trio 0.35 has no Unix listener, so the socket is built by hand: bound under a
restrictive umask (born 0660, never world-connectable), given to the
configured group, then served one task per admitted connection. Each
connection carries one request (see ``ctd.control.protocol``); the daemon's
``dispatch`` callable decides what it means and who may run it, from the peer
credentials read with SO_PEERCRED.

Resource handling:
    Connections are capped in total and per peer uid, with a reserve for root
    and the daemon's own uid; one over a cap is answered ``busy`` and closed
    (``ctd.control.limits``, which also backs off when accept() runs out of
    descriptors). A connection that has not sent its whole request line within
    ``request_timeout`` is answered and dropped, so an idle client cannot hold
    a slot; a client that stops reading is dropped after ``send_timeout``; a
    client that goes away mid-stream ends only its own connection (the
    handler's async iterator is closed). Nothing a client does can stop the server.

Error handling:
    ``PermissionDenied`` -> code ``denied``, ``NotFound`` -> ``not_found``, ``BadRequest`` -> ``bad_request``,
    any other ``CtdError`` -> ``error``, any other ``Exception`` -> logged and
    ``internal``. ``trio.Cancelled`` (a ``BaseException``) is never caught.
"""

from __future__ import annotations

import errno
import grp
import os
import socket as _stdsocket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import structlog
import trio

from ctd.control.limits import DEFAULT_LIMITS, ConnectionLimits, serve_admitted
from ctd.control.protocol import (
    CODE_BAD_REQUEST,
    CODE_DENIED,
    CODE_ERROR,
    CODE_INTERNAL,
    CODE_NOT_FOUND,
    MAX_REQUEST_LINE,
    ItemLine,
    Peer,
    Request,
    decode_request,
    encode_line_into,
    end_line,
    error_reply,
    ok_reply,
)
from ctd.errors import BadRequest, ConfigError, CtdError, NotFound, PermissionDenied

__all__ = ["ConnectionLimits", "Dispatch", "Peer", "Request", "SocketInUseError", "serve_control"]

Dispatch = Callable[[Request, Peer], Awaitable[Any]]

REQUEST_TIMEOUT: Final = 10.0  # seconds for the request line to arrive
SEND_TIMEOUT: Final = 30.0  # seconds for one write to be accepted by the client
SOCKET_MODE: Final = 0o660
DIR_MODE: Final = 0o750
_BIND_UMASK: Final = 0o117  # 0o777 & ~0o660
_FLUSH_BYTES: Final = 64 * 1024  # streamed items are written in chunks of about this size
_PROBE_TIMEOUT: Final = 2.0

log = structlog.get_logger("ctd.control")


class SocketInUseError(CtdError):
    """The control socket path is taken: a live daemon answers there, or it is not a socket."""


class _Oversize(Exception):
    """The request line exceeds ``MAX_REQUEST_LINE``."""


async def serve_control(
    path: str,
    dispatch: Dispatch,
    *,
    read_only: Callable[[str], bool] | None = None,
    socket_group: str | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    limits: ConnectionLimits = DEFAULT_LIMITS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the control socket at ``path`` and serve requests until cancelled.

    Args:
      path: the socket path; its parent directory is created (0750) if missing.
      dispatch: ``await dispatch(request, peer)`` returns the reply data, or an
        async iterator whose items are streamed.
      read_only: which commands only read: their audit line is at debug level (a
        monitoring script polling ``status`` must not fill the log); commands that
        change state, and every denial, stay at info/warning.
      socket_group: group owning the socket (0660); ``None`` keeps the process group.
      request_timeout: how long a connection may take to send its request.
      send_timeout: how long one write may wait for a client that is not reading.
      limits: caps on concurrent connections (total, per uid, reserve for root).

    Raises:
      SocketInUseError: a live daemon answers on ``path``, or ``path`` is not a socket.
      ConfigError: ``socket_group`` does not exist or cannot be given the socket.
    """
    gid = _resolve_group(socket_group)
    _ensure_parent(path, gid)
    await _remove_stale(path)
    sock, ident = _bind(path, gid)
    log.debug("control_listening", path=path)

    quiet = read_only or (lambda cmd: False)

    async def handler(stream: trio.SocketStream, peer: Peer) -> None:
        await _serve_connection(stream, peer, dispatch, request_timeout, send_timeout, quiet)

    try:
        await serve_admitted(trio.SocketListener(sock), handler, limits, task_status=task_status)
    finally:
        sock.close()
        _unlink_if_ours(path, ident)


# --- socket setup -------------------------------------------------------------


def _resolve_group(name: str | None) -> int:
    if name is None:
        return -1
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"unknown group {name!r}", "$.daemon.socket_group") from None


def _ensure_parent(path: str, gid: int) -> None:
    """Create the socket's directory 0750, owned by the socket group: traversable by that group only."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
        os.chmod(parent, DIR_MODE)
        if gid != -1:
            os.chown(parent, -1, gid)


async def _remove_stale(path: str) -> None:
    """Unlink a leftover socket at ``path``; refuse if it is live or not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError(f"{path} exists and is not a socket; refusing to replace it")
    probe = trio.socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
    with probe:
        try:
            with trio.move_on_after(_PROBE_TIMEOUT):
                await probe.connect(path)
            # Connected, or a listener too busy to accept within the probe time.
            raise SocketInUseError(f"another daemon is already listening on {path}")
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise SocketInUseError(f"cannot probe existing socket {path}: {exc}") from exc
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    log.info("control_stale_socket_removed", path=path)


def _bind(path: str, gid: int) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """Bind and listen at ``path``; return the socket and the file's (dev, ino)."""
    raw = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
    try:
        old_umask = os.umask(_BIND_UMASK)
        try:
            raw.bind(path)  # born 0660: never a world-connectable window
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        if gid != -1:
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                raise ConfigError(
                    f"cannot give the control socket to group id {gid}: {exc.strerror}",
                    "$.daemon.socket_group",
                ) from exc
        raw.listen(64)
        st = os.stat(path)
    except BaseException:
        raw.close()
        _unlink_quietly(path)
        raise
    return trio.socket.from_stdlib_socket(raw), (st.st_dev, st.st_ino)


def _unlink_if_ours(path: str, ident: tuple[int, int]) -> None:
    """Remove the socket file unless another process has replaced it meanwhile."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if (st.st_dev, st.st_ino) == ident:
        _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- one connection -----------------------------------------------------------


async def _serve_connection(
    stream: trio.SocketStream,
    peer: Peer,
    dispatch: Dispatch,
    request_timeout: float,
    send_timeout: float,
    quiet: Callable[[str], bool],
) -> None:
    async def send(data: bytes | bytearray) -> None:
        with trio.fail_after(send_timeout):
            await stream.send_all(data)

    try:
        async with stream:
            try:
                line = None
                with trio.move_on_after(request_timeout):
                    line = await _receive_line(stream, MAX_REQUEST_LINE)
                    if line is None:
                        return  # connected and left without a word
                if line is None:
                    await send(error_reply("timed out waiting for the request", CODE_BAD_REQUEST))
                    return
                request = decode_request(line)
            except _Oversize:
                await send(error_reply(f"request line longer than {MAX_REQUEST_LINE} bytes", CODE_BAD_REQUEST))
                return
            except ValueError as exc:
                await send(error_reply(str(exc), CODE_BAD_REQUEST))
                return
            await _answer(request, peer, dispatch, send, quiet(request.cmd))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("control_client_gone", peer_pid=peer.pid)
    except trio.TooSlowError:
        log.warning("control_client_stalled", peer_pid=peer.pid)
    except Exception:
        # A bug here must cost one connection, never the server.
        log.exception("control_connection_failed")


async def _receive_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    """Read up to the first newline; ``None`` if the peer closed without sending anything."""
    buf = bytearray()
    while True:
        idx = buf.find(b"\n")
        if idx >= 0:
            if idx > limit:
                raise _Oversize
            return bytes(buf[:idx])
        if len(buf) > limit:
            raise _Oversize
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(buf) if buf.strip() else None  # EOF: accept an unterminated last line
        buf += chunk


async def _answer(
    request: Request,
    peer: Peer,
    dispatch: Dispatch,
    send: Callable[[bytes | bytearray], Awaitable[None]],
    quiet: bool = False,
) -> None:
    try:
        result = await dispatch(request, peer)
    except Exception as exc:
        code, message = _classify(exc, request)
        _audit(request, peer, code, quiet)
        await send(error_reply(message, code))
        return
    if hasattr(result, "__aiter__"):
        _audit(request, peer, "stream", quiet)
        await _send_stream(result, request, send)
        return
    try:
        payload = ok_reply(result)
    except Exception as exc:  # data the encoder cannot represent: a daemon bug
        code, message = _classify(exc, request)
        payload = error_reply(message, code)
    else:
        code = "ok"
    _audit(request, peer, code, quiet)
    await send(payload)


async def _send_stream(result: Any, request: Request, send: Callable[[bytes | bytearray], Awaitable[None]]) -> None:
    """Stream ``result``'s items, about ``_FLUSH_BYTES`` per write, then the end line."""
    items: AsyncIterator[Any] = aiter(result)
    buf = bytearray()
    count = 0
    try:
        while True:
            try:
                item = await anext(items)
                encode_line_into(ItemLine(item=item), buf)
            except StopAsyncIteration:
                buf += end_line(count)
                break
            except Exception as exc:
                code, message = _classify(exc, request)
                buf += error_reply(message, code)
                break
            count += 1
            if len(buf) >= _FLUSH_BYTES:
                await send(buf)
                buf.clear()
        await send(buf)
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _classify(exc: Exception, request: Request) -> tuple[str, str]:
    """The (code, message) of the error reply for ``exc``."""
    match exc:
        case PermissionDenied():
            return CODE_DENIED, str(exc) or "permission denied"
        case NotFound():
            return CODE_NOT_FOUND, str(exc) or "not found"
        case BadRequest():
            return CODE_BAD_REQUEST, str(exc) or "bad request"
        case CtdError():
            return CODE_ERROR, str(exc) or type(exc).__name__
        case _:
            log.error("control_internal_error", cmd=request.cmd, exc_info=exc)
            return CODE_INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _audit(request: Request, peer: Peer, outcome: str, quiet: bool = False) -> None:
    """Every control command is an audit event: who (uid), what, allowed or not, outcome.

    Read-only commands (``quiet``) at debug; commands that change state at info; denials at warning.
    """
    allowed = outcome != CODE_DENIED
    (log.warning if not allowed else log.debug if quiet else log.info)(
        "control command" if allowed else "control command denied",
        ctd_event="control_command",
        cmd=request.cmd,
        ctd_peer_uid=peer.uid,
        peer_pid=peer.pid,
        allowed=allowed,
        outcome=outcome,
    )
