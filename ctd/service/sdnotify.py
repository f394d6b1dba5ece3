"""Minimal sd_notify(3) client: READY/RELOADING/STOPPING/WATCHDOG/STATUS/EXTEND_TIMEOUT_USEC.

Written by hand (see stack-facts §5): the PyPI clients swallow every exception
or lack ``RELOADING=1`` + ``MONOTONIC_USEC``, which ``Type=notify-reload`` needs.
Sending never raises ``OSError`` into the daemon; other exceptions propagate.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog
import trio

_log = structlog.get_logger(__name__, logger_name=__name__)


class Notifier:
    """Sends state datagrams to systemd's ``NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address = address or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    def notify(self, message: str) -> bool:
        """Send one raw datagram; return True if it was sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8", "replace"), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            _log.debug("sd_notify_failed", error=repr(exc), message=message.split("\n", 1)[0])
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1\n" + (_status_line(status) if status is not None else ""))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\n")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1\n")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1\n")

    def status(self, text: str) -> bool:
        return self.notify(_status_line(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start (or stop) times out (systemd >= 236)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}\n")


def _status_line(text: str) -> str:
    # A newline would start a new KEY=value assignment; keep STATUS one line.
    return "STATUS=" + text.replace("\n", " ") + "\n"


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None if not for us."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def run_watchdog(
    notifier: Notifier, interval: float, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Ping ``WATCHDOG=1`` now and then every *interval* seconds, forever."""
    if interval <= 0:
        raise ValueError(f"watchdog interval must be > 0, got {interval!r}")
    task_status.started()
    while True:
        notifier.watchdog()
        await trio.sleep(interval)
