"""The ctdctl side of the control socket: which socket, and one request/reply exchange per call."""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import time
import tomllib
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

import msgspec

from ctd.control.protocol import PUBLISHED_NAME, Published, Reply, decode_reply, encode_request
from ctd.errors import CtdError

DEFAULT_SOCKET: Final = "/run/ctd/ctd.sock"
DEFAULT_TIMEOUT: Final = 120.0  # seconds for the whole exchange (see ctd.ctdctl.timeouts)

_HINTS: Final = {
    errno.ENOENT: "is the daemon running? is this the right socket? use --socket or $CTD_SOCKET",
    errno.ECONNREFUSED: "is the daemon running? is this the right socket? use --socket or $CTD_SOCKET",
    errno.EACCES: "are you in the socket's group? (or use sudo; --socket or $CTD_SOCKET picks another socket)",
}


class ConnectError(CtdError):
    """The daemon cannot be reached (the message carries a one-line hint)."""


class CommandTimedOut(CtdError):
    """The daemon did not answer within the command's timeout (ctdctl exits 124)."""


class DaemonError(CtdError):
    """The daemon answered with an error reply."""

    def __init__(self, message: str, code: str) -> None:
        self.message = message
        self.code = code
        super().__init__(message)


class ControlClient:
    """Synchronous client: one connection per request.

    Args:
      path: the control socket.
      timeout: seconds the whole exchange may take (for a stream: the wait for each item);
        ``None`` waits forever. Past it, ``CommandTimedOut``.
    """

    def __init__(self, path: str, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, /, **args: Any) -> Any:
        """Run a plain command and return its data; raise ``DaemonError`` on an error reply."""
        with self._open(cmd, args) as lines:
            reply = self._next_reply(lines, cmd)
            if reply.ok is True and reply.data is not msgspec.UNSET:
                return reply.data
            raise self._error(reply)

    def call_ticking(self, cmd: str, tick: Callable[[], None], interval: float, /, **args: Any) -> Any:
        """``call``, running ``tick()`` every ``interval`` seconds while the daemon has not answered.

        One thread: ``select`` waits on the connection with the interval as its timeout, so
        ``tick`` (a progress display polling over another connection) runs between waits.
        """
        with self._open(cmd, args) as lines:
            while True:
                try:
                    left = lines.remaining()
                except TimeoutError as exc:
                    raise self._timed_out(cmd) from exc
                if lines.ready(interval if left is None else min(interval, left)):
                    break
                tick()
            reply = self._next_reply(lines, cmd)
            if reply.ok is True and reply.data is not msgspec.UNSET:
                return reply.data
            raise self._error(reply)

    def stream(self, cmd: str, /, **args: Any) -> Generator[Any, None, None]:
        """Run a streaming command and yield its items as they arrive."""
        with self._open(cmd, args) as lines:
            while True:
                reply = self._next_reply(lines, cmd)
                if reply.item is not msgspec.UNSET:
                    yield reply.item
                    lines.restart()  # the timeout is the wait for each item, not the whole stream
                elif reply.ok is True and reply.end:
                    return
                else:
                    raise self._error(reply)

    # -- internals -------------------------------------------------------------

    def _open(self, cmd: str, args: dict[str, Any]) -> _Lines:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lines = _Lines(sock, self.timeout)
        try:
            sock.settimeout(lines.remaining())
            sock.connect(self.path)
        except TimeoutError as exc:
            lines.close()
            raise self._timed_out(cmd) from exc
        except OSError as exc:
            lines.close()
            raise self._connect_error(exc) from exc
        try:
            sock.settimeout(lines.remaining())
            sock.sendall(encode_request(cmd, args))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused (busy) before the daemon read the request: its answer is still there to read
        except TimeoutError as exc:
            lines.close()
            raise self._timed_out(cmd) from exc
        except OSError as exc:
            lines.close()
            raise ConnectError(f"lost connection to {self.path}: {exc.strerror or exc}") from exc
        return lines

    def _timed_out(self, cmd: str) -> CommandTimedOut:
        return CommandTimedOut(
            f"no answer from the daemon within {self.timeout:g} s ({cmd}); it may still be working on it "
            "(--timeout SECONDS waits longer, 0 without limit)"
        )

    def _next_reply(self, lines: _Lines, cmd: str) -> Reply:
        line = self._next_line(lines, cmd)
        try:
            return decode_reply(line)
        except ValueError as exc:
            raise DaemonError(str(exc), "protocol") from exc

    def _next_line(self, lines: _Lines, cmd: str) -> bytes:
        try:
            line = lines.readline()
        except TimeoutError as exc:
            raise self._timed_out(cmd) from exc
        except OSError as exc:
            raise ConnectError(f"lost connection to {self.path}: {exc.strerror or exc}") from exc
        if not line.endswith(b"\n"):
            raise ConnectError(f"the daemon closed the connection on {self.path} before replying")
        return line

    def _connect_error(self, exc: OSError) -> ConnectError:
        reason = exc.strerror or str(exc)
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        hint = _HINTS.get(exc.errno or 0)
        message = f"cannot connect to {self.path}: {reason}"
        return ConnectError(f"{message} ({hint})" if hint else message)

    @staticmethod
    def _error(reply: Reply) -> DaemonError:
        if reply.error is not None:
            return DaemonError(reply.error, reply.code or "error")
        return DaemonError("unexpected reply from the daemon", "protocol")


class _Lines:
    """A connected socket read line by line within a deadline; closes the socket on exit."""

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self._sock = sock
        self._timeout = timeout
        self._buf = bytearray()
        self.restart()

    def restart(self) -> None:
        """Start the timeout again (a stream waits this long for each item)."""
        self._deadline = None if self._timeout is None else time.monotonic() + self._timeout

    def remaining(self) -> float | None:
        """Seconds left (None: no limit); TimeoutError once the deadline passed."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def readline(self) -> bytes:
        """The next line with its newline, or what is left when the daemon closes (no newline)."""
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            start = len(self._buf)
            self._sock.settimeout(self.remaining())
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                rest = bytes(self._buf)
                self._buf.clear()
                return rest
            self._buf += chunk
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line

    def close(self) -> None:
        self._sock.close()

    def ready(self, timeout: float) -> bool:
        """Whether the reply has started to arrive (nothing was read yet: the file's buffer is empty)."""
        readable, _, _ = select.select([self._sock], [], [], timeout)
        return bool(readable)

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- socket path --------------------------------------------------------------

PUBLISHED_DIRS: Final = ("/run/ctd",)  # where a daemon under the unit publishes (after $RUNTIME_DIRECTORY)
_MAX_CONFIG: Final = 4 * 1024 * 1024  # bytes of a config read leniently


def resolve_socket(
    socket_arg: str | None,
    config_arg: str | None,
    environ: dict[str, str] | None = None,
    notes: list[str] | None = None,
) -> str:
    """--socket, else $CTD_SOCKET, else [daemon].socket of --config/$CTD_CONFIG, else the default.

    A config that does not parse (an operator is editing it) must not cut ctdctl off
    from the daemon: then the socket is the ``[daemon]`` table's ``socket = "..."`` line
    if one can be read, else the one the daemon published for this config file
    (``ctd.control.published``), else the default. ``notes`` receives a line saying so.
    """
    env = os.environ if environ is None else environ
    if socket_arg:
        return socket_arg
    if env.get("CTD_SOCKET"):
        return env["CTD_SOCKET"]
    config = config_arg or env.get("CTD_CONFIG")
    if not config:
        return DEFAULT_SOCKET
    try:
        with open(config, "rb") as f:
            raw = f.read(_MAX_CONFIG)
    except OSError as exc:
        raise ConnectError(f"cannot read config {config}: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as exc:
        found, how = _fallback_socket(raw, config, env)
        if notes is not None:
            notes.append(f"note: config {config} does not parse ({exc}); using {found}, {how}")
        return found
    daemon = doc.get("daemon", {})
    path = daemon.get("socket") if isinstance(daemon, dict) else None
    return path if isinstance(path, str) and path else DEFAULT_SOCKET


_TABLE = re.compile(rb"^\s*\[\s*([^\]]*?)\s*\]\s*(#.*)?$")
_SOCKET_LINE = re.compile(rb"""^\s*socket\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(#.*)?$""")


def _fallback_socket(raw: bytes, config: str, env: Mapping[str, str]) -> tuple[str, str]:
    """The socket of a config that does not parse, and how it was found."""
    table = None
    for line in raw.splitlines():
        if m := _TABLE.match(line):
            table = m.group(1)
        elif table == b"daemon" and (m := _SOCKET_LINE.match(line)):
            value = (m.group(1) if m.group(1) is not None else m.group(2)).decode("utf-8", "replace")
            if value:
                return value, "from its [daemon] socket line"
    dirs = [d for d in (env.get("RUNTIME_DIRECTORY") or "").split(":") if d] + list(PUBLISHED_DIRS)
    for directory in dirs:
        published = _published(os.path.join(directory, PUBLISHED_NAME))
        if published is not None and _same_file(published.config, config):
            return published.socket, "published by the daemon running it"
    return DEFAULT_SOCKET, "the default"


def _published(path: str) -> Published | None:
    try:
        with open(path, "rb") as f:
            return msgspec.json.decode(f.read(4096), type=Published)
    except (OSError, msgspec.DecodeError):
        return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
