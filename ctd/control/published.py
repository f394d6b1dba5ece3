"""The daemon publishes where its control socket is, for a ctdctl that cannot read the config.

ctdctl finds the socket through ``[daemon].socket`` of the config file; when an
operator has just broken that file (a TOML syntax error), ``ctdctl reload`` must
still reach the daemon to hear its verdict. So the daemon writes a small JSON
file, :data:`ctd.control.protocol.PUBLISHED_NAME`, in systemd's runtime
directory (``$RUNTIME_DIRECTORY``, /run/ctd under the unit) or else next to its
socket: ``{"socket": ABS, "config": ABS, "pid": N}``. It is replaced atomically
and removed at a clean stop if it still names this process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Final

import msgspec
import structlog

from ctd.control.protocol import PUBLISHED_NAME, Published

log = structlog.get_logger("ctd.control")

FILE_MODE: Final = 0o644  # the directory (0750, the socket's group) is what limits who reads it


def published_path(socket: str, environ: dict[str, str] | None = None) -> str:
    """Where the daemon publishes: ``$RUNTIME_DIRECTORY`` (its first entry), else the socket's directory."""
    env = os.environ if environ is None else environ
    runtime = (env.get("RUNTIME_DIRECTORY") or "").split(":")[0]
    base = runtime or os.path.dirname(os.path.abspath(socket))
    return os.path.join(base, PUBLISHED_NAME)


@contextlib.contextmanager
def publish_socket(socket: str, config: str) -> Iterator[str | None]:
    """Write the published file for the lifetime of the block; yields its path (None if it could not be written)."""
    path = published_path(socket)
    record = Published(socket=os.path.abspath(socket), config=os.path.abspath(config), pid=os.getpid())
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(record) + b"\n")
        os.replace(tmp, path)
    except OSError as exc:
        # Not fatal: ctdctl still finds the socket through a readable config.
        log.warning("cannot publish the control socket's path", path=path, error=exc.strerror or str(exc))
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        yield None
        return
    try:
        yield path
    finally:
        _remove_if_ours(path)


def _remove_if_ours(path: str) -> None:
    try:
        with open(path, "rb") as f:
            current = msgspec.json.decode(f.read(4096), type=Published)
        if current.pid == os.getpid():
            os.unlink(path)
    except (OSError, msgspec.DecodeError):
        pass
