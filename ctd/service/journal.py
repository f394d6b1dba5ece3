"""journald's native protocol: detection, field encoding, a datagram sender.

Used by :mod:`ctd.service.logs` when stderr *is* the journal stream (systemd.exec(5):
``$JOURNAL_STREAM`` is ``"<dev>:<ino>"`` of the stream and must match
``fstat`` of our stderr; its mere presence is not enough). Each entry is one
datagram of ``KEY=value\\n`` lines to ``/run/systemd/journal/socket``; a value
containing ``\\n`` is framed as ``KEY\\n<u64 LE length><bytes>\\n``. An entry
too big for a datagram (``EMSGSIZE``/``ENOBUFS``) is written to a sealed
memfd whose fd is passed with ``SCM_RIGHTS`` in an empty datagram.

``$CTD_JOURNAL_SOCKET`` overrides the socket path. It exists for tests (a
throw-away journald namespace instance, ``/run/systemd/journal.<ns>/socket``)
and for hosts that want ctd's entries in a journald namespace.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

DEFAULT_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "CTD_JOURNAL_SOCKET"
IDENTIFIER = "ctd"

#: structlog level name -> syslog priority.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2, "fatal": 2}

_BAD_CHARS = re.compile(r"[^A-Z0-9_]")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
# Keys the journal already represents: event -> MESSAGE, level -> PRIORITY, ts -> entry timestamp.
_SKIP = frozenset({"event", "level", "ts"})


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def stream_is_journal(stream: TextIO | None = None) -> bool:
    """True when *stream* (default ``sys.stderr``) is the fd named by ``$JOURNAL_STREAM``."""
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
        st = os.fstat((sys.stderr if stream is None else stream).fileno())
    except (ValueError, OSError, AttributeError):  # io.UnsupportedOperation is both
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def field_name(key: str) -> str:
    """A valid journal field name: ``[A-Z0-9_]``, no leading ``_``, at most 64 chars."""
    return _BAD_CHARS.sub("_", str(key).upper()).lstrip("_")[:64]


def ctd_field(key: str) -> str:
    """Our own fields are prefixed ``CTD_`` (``ctd_source`` -> ``CTD_SOURCE``, ``pid`` -> ``CTD_PID``)."""
    name = field_name(key)
    if not name.startswith("CTD_"):
        name = "CTD_" + (name or "FIELD")
    return name[:64]


def priority(level: Any) -> int:
    return PRIORITIES.get(str(level).lower(), 6)


def _value_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        if isinstance(value, (Mapping, list, tuple, bool, int, float)) or value is None:
            value = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
        else:
            value = str(value)
    return value.encode("utf-8", "backslashreplace")


def encode_field(name: str, value: Any) -> bytes:
    data = _value_bytes(value)
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def encode_fields(fields: Iterable[tuple[str, Any]]) -> bytes:
    return b"".join(encode_field(k, v) for k, v in fields)


def entry_fields(event_dict: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then every other key as ``CTD_<KEY>``."""
    fields: list[tuple[str, Any]] = [
        ("MESSAGE", event_dict.get("event", "")),
        ("PRIORITY", priority(event_dict.get("level", "info"))),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
    ]
    fields += [(ctd_field(k), v) for k, v in event_dict.items() if k not in _SKIP]
    return fields


class JournalSender:
    """Sends payloads to journald; one lazily created close-on-exec datagram socket."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()
        self._sock: socket.socket | None = None

    def send(self, payload: bytes) -> None:
        """Send one entry; raises OSError if journald cannot be reached."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(payload, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        assert self._sock is not None
        fd = os.memfd_create("ctd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # journald insists on a sealed memfd
            # Not socket.send_fds: on 3.11 it ignores its address argument.
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([b""], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class JournalLogger:
    """structlog logger: gets the processed event dict as kwargs, sends it natively.

    Never raises: if encoding or sending fails, *fallback* gets the event dict
    (ctd.service.logs writes it as a JSON line to stderr).
    """

    def __init__(self, sender: JournalSender, fallback: Callable[[dict[str, Any]], None]) -> None:
        self.sender = sender
        self.fallback = fallback

    def msg(self, **event_dict: Any) -> None:
        try:
            self.sender.send(encode_fields(entry_fields(event_dict)))
        except Exception:
            try:
                self.fallback(event_dict)
            except Exception:
                pass

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg
