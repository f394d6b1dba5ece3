"""The parts the daemon puts its actors together from, and the handles it keeps of them.

``Daemon.run`` and ``Daemon.run_once`` (``ctd run --once``) both build from
here and from the Daemon's own ``_open_store``/``_sharer``, so once-mode cannot
lose a part of the wiring (it once shared muted rules: the mutes were missing).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
import trio

from ctd.allowlist import Allowlist
from ctd.ask import Ask
from ctd.config import Config, PluginConfig
from ctd.errors import describe
from ctd.model import Adapter
from ctd.plugins import adapter_class
from ctd.policy import backoff_delay
from ctd.sharing.actor import Sharer, SharingStatus, Wake
from ctd.sources.actor import SourceStatus

log = structlog.get_logger("ctd.daemon")

SYNC_QUEUE = 4  # sync requests queued for a busy source; further askers wait for room
SHARING_INBOX = 8  # wake-ups beyond it are dropped: a pass is already due

# How the daemon gets an adapter for a plugin: ``ctd.plugins.open_adapter``, or a test's own.
AdapterOpener = Callable[[str, PluginConfig], AbstractAsyncContextManager[Adapter]]
# The control socket's request handler: (request, peer) -> reply (``ctd.control.commands.Commands.dispatch``).
ControlHandler = Callable[[Any, Any], Awaitable[Any]]


def file_hash(path: str) -> str | None:
    """The same short hash ``load_config`` gives a file, also for a file it rejects."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return None


def db_path(cfg: Config) -> str:
    return os.path.join(cfg.daemon.state_dir, "ctd.db")


def allowlist_matcher(cfg: Config) -> Callable[[str, str], bool] | None:
    al = Allowlist(cfg.allowlist.values, cfg.allowlist.cidrs, cfg.allowlist.domains)
    return al.matches if al else None


def pulling(cfg: Config) -> dict[str, PluginConfig]:
    """The plugins that pull: one source actor each."""
    return {name: p for name, p in cfg.plugins.items() if p.pull}


def served(cfg: Config) -> dict[str, PluginConfig]:
    """The plugins whose adapter serves something (an EDL web server): one service actor each."""
    return {name: p for name, p in cfg.plugins.items() if adapter_class(p.adapter).can_serve}


def sharing_key(cfg: Config, name: str) -> tuple[Any, ...]:
    """Everything a sharing actor depends on: a change to any of it restarts the actor."""
    sh = cfg.sharing[name]
    return (sh, cfg.rules[sh.rule], cfg.plugins[sh.destination])


async def serve_with_restarts(
    name: str, adapter: Adapter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a plugin's service (e.g. the EDL web server); a crash is logged and retried with backoff."""
    task_status.started()
    failures = 0
    while True:
        try:
            await adapter.serve()
            return
        except Exception as exc:
            failures += 1
            delay = backoff_delay(failures, None)
            log.error(
                "plugin service failed",
                ctd_event="service_failed",
                plugin=name,
                error=describe(exc),
                retry_in_s=round(delay, 1),
            )
            await trio.sleep(delay)


class SourceHandle:
    """What the daemon keeps of a running source actor: its status and its sync inbox."""

    def __init__(self, status: SourceStatus, sync_send: trio.MemorySendChannel[Ask]) -> None:
        self.status = status
        self.sync_send = sync_send

    def close(self) -> None:
        """The actor is gone: a sync request fails at once instead of waiting."""
        self.sync_send.close()


class SharingHandle:
    """What the daemon keeps of a running sharing actor: its status, its inbox and its Sharer."""

    # ``sharer`` is set by the actor once its adapter is open, before the
    # supervisor lists the handle (that happens when the actor has started).
    sharer: Sharer

    def __init__(self, status: SharingStatus, inbox: trio.MemorySendChannel[Wake | Ask]) -> None:
        self.status = status
        self.inbox = inbox

    def close(self) -> None:
        """The actor is gone: a request fails at once instead of waiting."""
        self.inbox.close()

    def wake(self) -> None:
        try:
            self.inbox.send_nowait(Wake())
        except trio.WouldBlock:
            pass  # a pass is already due: this change will be in it
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
