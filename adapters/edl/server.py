"""The ``edl`` adapter's web server: list files over HTTP/1.1, on trio with h11.

h11 does the HTTP parsing and framing; this module only routes, authenticates
and streams files. Lists are files written atomically by the sharing actor
(``<lists_dir>/<name>.txt``), so an open file is always one complete list and
its ``fstat`` gives a consistent ``ETag`` / ``Last-Modified`` for that content.

Clients are untrusted and may be slow or malicious: a whole request (head and
body, and the idle time before it on a kept-alive connection) must arrive
within ``request_timeout``, every chunk sent must be taken within
``send_timeout`` and the whole response within ``response_timeout``; the
request head (request line, fields, blank line) is at most
``max_header_bytes`` and a body is bounded; a request framed both by
``Transfer-Encoding`` and ``Content-Length`` (a smuggling vector) is refused and
its connection closed. Connections are capped in all (``max_connections``) and
per client IP (``max_connections_per_client``); one over a cap is answered
``503`` with ``Retry-After`` (while as many again are being refused; past that
it is just closed), and logged once a minute per client IP (``edl_overloaded``,
counting the refusals held back). A bug or a client error costs one connection,
never the server. Out of descriptors, ``accept()`` backs off with one warning a
minute (``ctd.accept``, as the control socket does) instead of trio's
traceback every 100 ms.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import stat
import time
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, Literal

import h11
import structlog
import trio

from ctd.accept import AcceptBackoff, LogLimiter

log = structlog.get_logger("ctd.adapters.edl")

LIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,256}")
_BIND = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")
_RECV = 16384
_REFUSE_WAIT = 5.0  # at most this long to read the request of a connection answered 503
REALM = 'Basic realm="ctd"'


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    host: str
    port: int
    lists_dir: str
    username: str | None = None
    password: str | None = None
    path_token: str | None = None
    request_timeout: float = 10.0
    send_timeout: float = 30.0
    response_timeout: float = 300.0
    max_connections: int = 256
    max_connections_per_client: int = 16
    retry_after: int = 10
    max_header_bytes: int = 16384
    max_body_bytes: int = 65536
    chunk_size: int = 65536


class _Reply(Exception):
    """Answer the current request with ``status``, then close the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# --- pure helpers -----------------------------------------------------------------


def parse_bind(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> (host, port); raises ValueError."""
    m = _BIND.fullmatch(value.strip())
    if not m:
        raise ValueError(f"bind must be HOST:PORT or [IPV6]:PORT, got {value!r}")
    port = int(m["port"])
    if port > 65535:
        raise ValueError(f"bind port out of range: {port}")
    return m["v6"] or m["host"], port


def route(target: bytes, token: str | None) -> tuple[str | None, bool]:
    """The list a request target names, and whether a path token was wrong.

    With a token configured only ``/edl/<token>/NAME.txt`` is served; the
    plain ``/edl/NAME.txt`` is then unknown (404), like anything else.
    """
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    try:
        parts = path.decode("ascii").split("/")
    except UnicodeDecodeError:
        return None, False
    if len(parts) < 3 or parts[0] != "" or parts[1] != "edl":
        return None, False
    if token is None:
        if len(parts) != 3:
            return None, False
        leaf = parts[2]
    else:
        if len(parts) != 4:
            return None, False
        if not hmac.compare_digest(parts[2].encode(), token.encode()):
            return None, True
        leaf = parts[3]
    if not leaf.endswith(".txt") or not LIST_NAME.fullmatch(leaf[:-4]):
        return None, False
    return leaf[:-4], False


def basic_ok(header: bytes | None, username: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries these Basic credentials."""
    if not header:
        return False
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, pw = decoded.partition(b":")
    # Compare both halves whatever the first says, so timing says nothing.
    user_ok = hmac.compare_digest(user, username.encode())
    pw_ok = hmac.compare_digest(pw, password.encode())
    return bool(sep) and user_ok and pw_ok


def etag_of(st: os.stat_result) -> str:
    """A strong validator: each atomic rewrite is a new inode and a new mtime."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def not_modified(headers: dict[bytes, bytes], etag: str, mtime: float) -> bool:
    """RFC 9110 13.2.2: If-None-Match (weak comparison) wins over If-Modified-Since."""
    inm = headers.get(b"if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.decode("latin-1").split(",")]
        return any(t == "*" or t.removeprefix("W/") == etag for t in tags)
    ims = headers.get(b"if-modified-since")
    if ims is None:
        return False
    try:
        since = parsedate_to_datetime(ims.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an invalid date is ignored
    return int(mtime) <= since


# --- the server ---------------------------------------------------------------------


async def serve_edl(
    s: ServerSettings,
    listeners: list[trio.SocketListener] | None = None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the lists on ``listeners`` (default: bind ``s.host:s.port``) until cancelled.

    ``task_status.started`` gets the bound ``(host, port)`` (useful with port 0).
    """
    if listeners is None:
        listeners = await trio.open_tcp_listeners(s.port, host=s.host)
    addr = listeners[0].socket.getsockname()[:2]
    gate = Gate(s)
    log.info("edl server listening", ctd_event="edl_listening", address=f"{addr[0]}:{addr[1]}", lists_dir=s.lists_dir)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, s, gate, nursery)
        task_status.started((addr[0], addr[1]))


async def _accept_loop(listener: trio.SocketListener, s: ServerSettings, gate: Gate, nursery: trio.Nursery) -> None:
    """Accept on one listener, each connection in its own task (backing off when out of descriptors)."""
    backoff = AcceptBackoff(log, what="edl server", event="edl", context=lambda: {"edl_connections": gate.active})
    async with listener:
        while True:
            stream = await backoff.accept(listener)
            nursery.start_soon(_connection, stream, s, gate)


class Gate:
    """Who gets a connection slot: at most ``max_connections`` in all and
    ``max_connections_per_client`` per peer IP. Of the others, up to
    ``max_connections`` at a time are answered 503; past that they are closed
    unanswered, so a flood costs bounded work. Only the trio thread touches it."""

    def __init__(self, s: ServerSettings) -> None:
        self.s = s
        self.active = 0
        self.refusing = 0
        self.per_client: dict[str, int] = {}
        self.refusals = LogLimiter()  # one edl_overloaded line per client IP a minute

    def enter(self, ip: str) -> Literal["serve", "refuse", "drop"]:
        held = self.per_client.get(ip, 0)
        if self.active < self.s.max_connections and held < self.s.max_connections_per_client:
            self.active += 1
            self.per_client[ip] = held + 1
            return "serve"
        if self.refusing < self.s.max_connections:
            self.refusing += 1
            return "refuse"
        return "drop"

    def leave(self, ip: str, how: str) -> None:
        if how == "refuse":
            self.refusing -= 1
        elif how == "serve":
            self.active -= 1
            if (left := self.per_client[ip] - 1) > 0:
                self.per_client[ip] = left
            else:
                del self.per_client[ip]


def _peer(stream: trio.abc.Stream) -> tuple[str, str]:
    """The client's IP (the per-client key) and ``ip:port`` for logs."""
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
        return str(host), f"{host}:{port}"
    except (AttributeError, OSError):
        return "?", "?"


async def _connection(stream: trio.abc.Stream, s: ServerSettings, gate: Gate) -> None:
    """One client connection: requests in sequence (keep-alive) until it closes or misbehaves."""
    ip, peer = _peer(stream)
    how = gate.enter(ip)
    try:
        if how != "serve":
            if (held := gate.refusals.check(ip)) is not None:
                log.warning(
                    "edl connection refused: too many connections",
                    ctd_event="edl_overloaded",
                    client=ip,
                    peer=peer,
                    answered=how == "refuse",
                    suppressed=held,
                )
            if how == "refuse":
                await _refuse(stream, s)
            return
        await _serve_connection(stream, s, peer)
    finally:
        gate.leave(ip, how)
        await stream.aclose()


async def _refuse(stream: trio.abc.Stream, s: ServerSettings) -> None:
    """Read the request head (briefly) and answer 503 with Retry-After; any trouble just closes."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=s.max_header_bytes)
    with trio.move_on_after(min(s.request_timeout, _REFUSE_WAIT)):
        try:
            while (event := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(_RECV)))
            if isinstance(event, h11.Request):
                await _simple(conn, stream, s, 503, [("Retry-After", str(s.retry_after))], close=True)
                await _linger(stream)
        except Exception:
            pass  # best effort, like any last words: the connection is closed either way


async def _serve_connection(stream: trio.abc.Stream, s: ServerSettings, peer: str) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=s.max_header_bytes)
    last_words: int | None = None
    try:
        await _requests(conn, stream, s, peer)
    except _Reply as r:
        last_words = r.status
    except h11.RemoteProtocolError as exc:
        log.debug("edl bad request", ctd_event="edl_bad_request", peer=peer, error=str(exc))
        last_words = exc.error_status_hint
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass  # the client went away or stopped reading
    except Exception:
        log.exception("edl connection failed", ctd_event="edl_error", peer=peer)
    try:
        if last_words is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await _simple(conn, stream, s, last_words, close=True)
            await _linger(stream)
    except Exception:
        pass  # best effort: the connection is closed either way


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then drain briefly: closing with unread input would reset the
    connection and could destroy the error response before the client reads it."""
    with trio.move_on_after(1):
        await stream.send_eof()  # type: ignore[attr-defined]
        drained = 0
        while drained < 1 << 20 and (data := await stream.receive_some(_RECV)):
            drained += len(data)


async def _requests(conn: h11.Connection, stream: trio.abc.Stream, s: ServerSettings, peer: str) -> None:
    """Requests in sequence on one connection (keep-alive) until it closes."""
    while True:
        req = await _read_request(conn, stream, s)
        if req is None:
            return
        # The whole response, not just each chunk: a reader that takes a chunk just
        # before send_timeout, again and again, would otherwise hold its slot forever.
        with trio.fail_after(s.response_timeout):
            await _respond(conn, stream, s, req, peer)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream, s: ServerSettings) -> h11.Request | None:
    """The next complete request, or None when the client closed or was too slow."""
    req: h11.Request | None = None
    body = 0
    fed = len(conn.trailing_data[0])  # bytes of this request h11 holds already (pipelined)
    with trio.move_on_after(s.request_timeout):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECV)
                fed += len(data)
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                # h11 bounds only an incomplete head: one completed by the last read may be
                # up to a read larger than the limit, so measure what the head consumed.
                if fed - len(conn.trailing_data[0]) > s.max_header_bytes:
                    raise _Reply(431)
                names = {name for name, _ in event.headers}
                if b"transfer-encoding" in names and b"content-length" in names:
                    raise _Reply(400)  # RFC 9112 6.1: ambiguous framing; refuse, then close
                req = event
            elif isinstance(event, h11.Data):
                # GET and HEAD carry no meaningful body: bounded, then dropped.
                body += len(event.data)
                if body > s.max_body_bytes:
                    raise _Reply(413)
            elif isinstance(event, h11.EndOfMessage):
                return req
            else:  # ConnectionClosed or PAUSED
                return None
    if req is not None:
        raise _Reply(408)
    return None  # idle, or dribbling a head: just hang up


async def _send(conn: h11.Connection, stream: trio.abc.Stream, s: ServerSettings, event: Any) -> None:
    data = conn.send(event)
    if data:
        with trio.fail_after(s.send_timeout):
            await stream.send_all(data)


def _headers(extra: list[tuple[str, str]] | None = None, close: bool = False) -> list[tuple[str, str]]:
    h = [("Date", http_date(time.time())), ("Server", "ctd")]
    if close:
        h.append(("Connection", "close"))
    return h + (extra or [])


async def _simple(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    s: ServerSettings,
    status: int,
    extra: list[tuple[str, str]] | None = None,
    *,
    close: bool = False,
    head: bool = False,
) -> None:
    """A short plain-text status response."""
    body = b"" if status == 304 else f"{status} {_REASONS.get(status, '')}\n".encode()
    hdrs = _headers(extra, close)
    if status != 304:
        hdrs += [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    try:
        await _send(
            conn, stream, s, h11.Response(status_code=status, headers=hdrs, reason=_REASONS.get(status, "").encode())
        )
        if body and not head:
            await _send(conn, stream, s, h11.Data(data=body))
        await _send(conn, stream, s, h11.EndOfMessage())
    except h11.LocalProtocolError:
        pass  # the connection was already beyond repair


_REASONS = {
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


async def _respond(
    conn: h11.Connection, stream: trio.abc.Stream, s: ServerSettings, req: h11.Request, peer: str
) -> None:
    method = req.method.decode("ascii", "replace")
    headers = {k.lower(): v for k, v in req.headers}
    name, bad_token = route(req.target, s.path_token)
    status, size = await _dispatch(conn, stream, s, method, name, bad_token, headers, peer)
    # The target may hold the path token: log the list name only.
    log.debug("edl request", ctd_event="edl_access", peer=peer, method=method, list=name, status=status, bytes=size)


async def _dispatch(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    s: ServerSettings,
    method: str,
    name: str | None,
    bad_token: bool,
    headers: dict[bytes, bytes],
    peer: str,
) -> tuple[int, int]:
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await _simple(conn, stream, s, 405, [("Allow", "GET, HEAD")])
        return 405, 0
    if bad_token:
        log.warning("edl request with a wrong path token", ctd_event="edl_auth_failed", peer=peer, reason="path token")
    if name is None:
        await _simple(conn, stream, s, 404, head=head)
        return 404, 0
    if s.username is not None and s.password is not None:
        if not basic_ok(headers.get(b"authorization"), s.username, s.password):
            if b"authorization" in headers:
                log.warning(
                    "edl request with wrong credentials",
                    ctd_event="edl_auth_failed",
                    peer=peer,
                    reason="basic auth",
                    list=name,
                )
            await _simple(conn, stream, s, 401, [("WWW-Authenticate", REALM)], head=head)
            return 401, 0
    return await _send_list(conn, stream, s, name, headers, head)


async def _send_list(
    conn: h11.Connection, stream: trio.abc.Stream, s: ServerSettings, name: str, headers: dict[bytes, bytes], head: bool
) -> tuple[int, int]:
    path = os.path.join(s.lists_dir, name + ".txt")
    try:
        f = await trio.open_file(path, "rb")
    except OSError:
        await _simple(conn, stream, s, 404, head=head)
        return 404, 0
    async with f:
        st = await trio.to_thread.run_sync(os.fstat, f.fileno())
        if not stat.S_ISREG(st.st_mode):
            await _simple(conn, stream, s, 404, head=head)
            return 404, 0
        etag, modified = etag_of(st), http_date(st.st_mtime)
        validators = [("ETag", etag), ("Last-Modified", modified), ("Cache-Control", "no-cache")]
        if not_modified(headers, etag, st.st_mtime):
            await _simple(conn, stream, s, 304, validators)
            return 304, 0
        hdrs = _headers(
            validators + [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(st.st_size))]
        )
        await _send(conn, stream, s, h11.Response(status_code=200, headers=hdrs, reason=b"OK"))
        sent = 0
        if not head:
            # The open file is one complete list whatever is renamed over it meanwhile.
            while sent < st.st_size:
                chunk = await f.read(min(s.chunk_size, st.st_size - sent))
                if not chunk:
                    break  # h11 refuses EndOfMessage short of Content-Length: the connection ends
                await _send(conn, stream, s, h11.Data(data=chunk))
                sent += len(chunk)
        await _send(conn, stream, s, h11.EndOfMessage())
        return 200, sent
