"""The ctdctl wire protocol: newline-delimited JSON over a Unix stream socket.

One connection carries one request and its reply::

    -> {"v": 1, "cmd": "status", "args": {}}
    <- {"v": 1, "ok": true, "data": {...}}                 plain command
    <- {"v": 1, "ok": false, "error": "...", "code": "..."}  daemon-side error

A streaming command answers with one line per item and a closing line::

    <- {"v": 1, "item": {...}}            (N times)
    <- {"v": 1, "ok": true, "end": true, "count": N}

or an error line in place of the closing line if the stream failed midway.

Error codes: ``bad_request`` (malformed/unknown request, or an argument that is
not one of the known values), ``not_found`` (the value, source, rule, sharing
or plugin the command names does not exist), ``denied`` (peer not
allowed), ``error`` (a ctd error, e.g. a rejected reload), ``internal`` (a bug),
``busy`` (too many control connections: sent at once on connecting, before the
request is read, and the connection is closed).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

PROTOCOL_VERSION: Final = 1
MAX_REQUEST_LINE: Final = 64 * 1024  # bytes, newline excluded

CODE_BAD_REQUEST: Final = "bad_request"
CODE_DENIED: Final = "denied"
CODE_ERROR: Final = "error"
CODE_INTERNAL: Final = "internal"
CODE_BUSY: Final = "busy"
CODE_NOT_FOUND: Final = "not_found"

# The file where a running daemon says where its socket is (ctd.control.published), read by
# ctdctl when the config file does not parse.
PUBLISHED_NAME: Final = "control.json"


class Request(msgspec.Struct, frozen=True):
    """A ctdctl request: command name plus keyword arguments."""

    v: int
    cmd: str
    args: dict[str, Any] = {}


class Peer(msgspec.Struct, frozen=True):
    """Credentials of the process at the other end of the socket (SO_PEERCRED, SO_PEERGROUPS)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary groups, as the kernel saw them at connect()


class Published(msgspec.Struct, frozen=True):
    """What the daemon publishes about its control socket (absolute paths)."""

    socket: str
    config: str
    pid: int


class OkReply(msgspec.Struct, kw_only=True):
    """Reply to a plain command."""

    v: int = PROTOCOL_VERSION
    ok: bool = True
    data: Any = None


class ErrorReply(msgspec.Struct, kw_only=True):
    """Reply when the request could not be served (also ends a failed stream)."""

    v: int = PROTOCOL_VERSION
    ok: bool = False
    error: str
    code: str


class ItemLine(msgspec.Struct, kw_only=True):
    """One item of a streaming reply."""

    v: int = PROTOCOL_VERSION
    item: Any


class EndLine(msgspec.Struct, kw_only=True):
    """Closing line of a successful streaming reply."""

    v: int = PROTOCOL_VERSION
    ok: bool = True
    end: bool = True
    count: int


class Reply(msgspec.Struct, kw_only=True):
    """Client-side view of any reply line (one decoder for all of them).

    ``data`` and ``item`` are ``UNSET`` when absent, so a ``null`` payload is
    told apart from a missing one.
    """

    v: int
    ok: bool | msgspec.UnsetType = msgspec.UNSET
    data: Any = msgspec.UNSET
    item: Any = msgspec.UNSET
    end: bool = False
    count: int | None = None
    error: str | None = None
    code: str | None = None


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)


def encode_line(msg: Any) -> bytes:
    """Encode one message (Struct, dict, list...) as a JSON line."""
    return _encoder.encode(msg) + b"\n"


def encode_line_into(msg: Any, buf: bytearray) -> None:
    """Append one message as a JSON line to ``buf`` (no intermediate bytes)."""
    _encoder.encode_into(msg, buf, -1)
    buf.extend(b"\n")


def encode_request(cmd: str, args: dict[str, Any] | None = None) -> bytes:
    """The request line for ``cmd`` with ``args``."""
    return encode_line(Request(PROTOCOL_VERSION, cmd, args or {}))


def decode_request(line: bytes) -> Request:
    """Parse a request line; raise ``ValueError`` saying what is wrong."""
    try:
        request = _request_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed request: {exc}") from exc
    if request.v != PROTOCOL_VERSION:
        raise ValueError(f"unsupported protocol version {request.v} (this daemon speaks {PROTOCOL_VERSION})")
    return request


def decode_reply(line: bytes) -> Reply:
    """Parse a reply line; raise ``ValueError`` if it is not one."""
    try:
        return _reply_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed reply from daemon: {exc}") from exc


def ok_reply(data: Any) -> bytes:
    """The reply line for a plain command's result."""
    return encode_line(OkReply(data=data))


def error_reply(message: str, code: str) -> bytes:
    """The reply line for an error."""
    return encode_line(ErrorReply(error=message, code=code))


def end_line(count: int) -> bytes:
    """The closing line of a streaming reply of ``count`` items."""
    return encode_line(EndLine(count=count))
