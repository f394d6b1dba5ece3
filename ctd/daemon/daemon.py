"""The daemon: root nursery, startup order, reload, graceful stop.

Startup: store ready -> control socket bound -> signal receiver open ->
sources started -> READY=1. Reload validates the whole new file first and
keeps the running config if it is invalid; otherwise it diffs by name and
touches only what changed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import structlog
import trio

from ctd.ask import Ask, ask
from ctd.config import Config, ConfigDiff, PluginConfig, diff_named, load_config
from ctd.config_warnings import log_warnings
from ctd.control.published import publish_socket
from ctd.control.server import serve_control
from ctd.daemon.metrics import run_metrics
from ctd.daemon.startup import check_socket_directory, claim_state_dir
from ctd.daemon.supervisor import Supervisor
from ctd.daemon.wiring import (
    SHARING_INBOX,
    SYNC_QUEUE,
    AdapterOpener,
    ControlHandler,
    SharingHandle,
    SourceHandle,
    allowlist_matcher,
    db_path,
    file_hash,
    pulling,
    serve_with_restarts,
    served,
    sharing_key,
)
from ctd.errors import ActorStopped, ConfigError, CtdError, NotFound, StoreDamaged, describe
from ctd.model import Adapter
from ctd.plugins import open_adapter
from ctd.policy import real_cause
from ctd.rates import RateCounter
from ctd.service import logs as logs
from ctd.service.sdnotify import Notifier, run_watchdog, watchdog_interval
from ctd.sharing.actor import ShareNow, Sharer, ShareResult, SharingStatus, Wake, run_sharing
from ctd.sources.actor import (
    AllowlistRef,
    PullNow,
    PullResult,
    SourceStatus,
    pull_once,
    report_failure,
    run_source,
)
from ctd.store import IngestResult, Store, run_store

log = structlog.get_logger("ctd.daemon")

T = TypeVar("T")

STARTUP_EXTENSION = 120.0  # seconds systemd's start timeout is extended by while the store waits for space


class Daemon:
    """The running daemon. ``open_adapter`` is how its actors get adapters (tests hand in their own)."""

    def __init__(
        self, config: Config, notifier: Notifier | None = None, *, open_adapter: AdapterOpener = open_adapter
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.open_adapter = open_adapter
        self.started_at = time.time()
        self._store: Store | None = None
        self._sources: Supervisor | None = None
        self._sharings: Supervisor | None = None
        self._services: Supervisor | None = None
        self._reload_lock = trio.Lock()
        self.allowlist = AllowlistRef(allowlist_matcher(config))
        self.mutes: dict[str, int] = {}
        self.ingest_rate = RateCounter()
        self.share_rate = RateCounter()
        self._ready = False
        self._stop_signal = ""
        self._store_problem: str | None = None  # while the store is not open yet (waiting for space)

    # -- parts: set while the daemon starts; a control request may arrive before ----------

    @property
    def store(self) -> Store:
        if self._store is None and self._store_problem:
            raise ActorStopped(f"the daemon is still starting: {self._store_problem}; waiting for space")
        return _started(self._store)

    @property
    def sources(self) -> Supervisor:
        return _started(self._sources)

    @property
    def sharings(self) -> Supervisor:
        return _started(self._sharings)

    @property
    def services(self) -> Supervisor:
        return _started(self._services)

    # -- lifecycle -------------------------------------------------------------

    async def run(self, control: ControlHandler | None = None, read_only: Callable[[str], bool] | None = None) -> None:
        """Run until SIGTERM/SIGINT. ``control`` answers the control socket (none is bound without it);
        ``read_only`` says which of its commands change nothing (audited at debug level).

        Whoever builds the daemon hands in the handler (the CLI: ``Commands(daemon, policy).dispatch``),
        so the daemon does not import the command handlers and they do not import it.

        Raises ``StartupError`` (one line, an exit status) when it cannot start: another ctd on the
        same state_dir, a state_dir it cannot use, a damaged database.
        """
        cfg = self.config
        log.info(
            "daemon starting", ctd_event="daemon_start", pid=os.getpid(), ctd_config_hash=cfg.hash, config=cfg.path
        )
        log.info(
            "config loaded",
            ctd_event="config_loaded",
            ctd_config_hash=cfg.hash,
            config=cfg.path,
            plugins=sorted(cfg.plugins),
            rules=sorted(cfg.rules),
            sharing=sorted(cfg.sharing),
        )
        log_warnings(cfg)
        with claim_state_dir(cfg.daemon.state_dir):
            check_socket_directory(cfg.daemon.socket)
            async with trio.open_nursery() as root:
                interval = watchdog_interval()
                if interval:  # from the start: waiting for space must not look like a hang
                    root.start_soon(run_watchdog, self.notifier, interval)
                with (
                    trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals,
                    contextlib.ExitStack() as published,
                ):
                    stop = trio.Event()
                    starting = trio.CancelScope()
                    root.start_soon(self._signals, signals, stop, starting)
                    if control is not None:
                        # Bound before the store opens: a second daemon on this socket is told so before
                        # it touches a database, and a store waiting for space can say so to ctdctl.
                        await root.start(
                            partial(serve_control, socket_group=cfg.daemon.socket_group, read_only=read_only),
                            cfg.daemon.socket,
                            control,
                        )
                        # ctdctl finds the socket here when the config file no longer parses.
                        published.enter_context(publish_socket(cfg.daemon.socket, cfg.path))
                    async with trio.open_nursery() as actors:
                        self._sources = Supervisor(actors, "source")
                        self._sharings = Supervisor(actors, "sharing")
                        self._services = Supervisor(actors, "service")
                        with starting:  # a SIGTERM while starting (waiting for space) stops at once
                            await self._start(root, actors)
                        if not stop.is_set():
                            await stop.wait()
                        self.notifier.stopping()
                        log.info("daemon stopping", ctd_event="daemon_stop", signal=self._stop_signal)
                        # Sources first, so no new batch reaches the store; a batch the
                        # store is committing finishes (its thread is never abandoned).
                        with trio.move_on_after(float(cfg.daemon.shutdown_timeout)):
                            await self.sources.stop_all()
                            await self.sharings.stop_all()
                            await self.services.stop_all()
                        actors.cancel_scope.cancel()
                    root.cancel_scope.cancel()
        log.info("daemon stopped", ctd_event="daemon_stopped")

    async def _start(self, root: trio.Nursery, actors: trio.Nursery) -> None:
        """The store (waiting for space if state_dir is full), then services, sharings, sources; READY=1."""
        cfg = self.config
        root.start_soon(self._extend_start_while_waiting)
        await self._open_store(root)
        for name, plugin in served(cfg).items():
            await self._start_service(name, plugin)
        for name in cfg.sharing:
            await self._start_sharing(name)
        for name, plugin in pulling(cfg).items():
            await self._start_source(name, plugin)
        actors.start_soon(self._housekeeping)
        if cfg.daemon.metrics:
            actors.start_soon(run_metrics, self, cfg.daemon.metrics)
        self._ready = True
        health = self.health()
        self.notifier.ready(status="serving" if health["state"] == "running" else _status_line(health))
        log.info("daemon ready", ctd_event="daemon_ready", sources=len(self.sources.names()))

    async def _signals(self, signals: Any, stop: trio.Event, starting: trio.CancelScope) -> None:
        """SIGHUP reloads (once started); SIGTERM/SIGINT stop, also while still starting."""
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not self._ready:
                    log.warning("reload ignored: the daemon is still starting", ctd_event="config_rejected")
                    continue
                try:
                    await self.reload()
                except CtdError as exc:
                    if not isinstance(exc, ConfigError):  # a ConfigError is logged by reload()
                        log.error("reload failed", ctd_event="config_rejected", error=describe(exc))
                continue
            self._stop_signal = signal.Signals(signum).name
            starting.cancel()
            stop.set()
            return

    async def run_once(self) -> tuple[dict[str, PullResult], dict[str, ShareResult]]:
        """``ctd run --once``: one pull of every pulling plugin, then one pass of every sharing.

        Built like ``run``: the same store opening (mutes loaded), allowlist, commit hook and Sharers.
        """
        results: dict[str, PullResult] = {}
        shared: dict[str, ShareResult] = {}
        cfg = self.config
        with claim_state_dir(cfg.daemon.state_dir, purpose="once"):
            await self._run_once(results, shared)
        return results, shared

    async def _run_once(self, results: dict[str, PullResult], shared: dict[str, ShareResult]) -> None:
        cfg = self.config
        async with trio.open_nursery() as root:
            store = await self._open_store(root, wait_for_space=False)

            async def one(name: str, plugin: PluginConfig) -> None:
                # Each pull is its own task: its log lines name its source, as under a source actor.
                structlog.contextvars.bind_contextvars(ctd_source=name)
                status = SourceStatus(name, plugin)
                try:
                    async with self.open_adapter(name, plugin) as adapter:
                        results[name] = await pull_once(
                            name, plugin, adapter, store, self.allowlist, status, self._on_commit
                        )
                except Exception as exc:
                    cause = await report_failure(store, name, exc)
                    results[name] = PullResult(source=name, error=describe(cause))

            async with trio.open_nursery() as pulls:
                for name, plugin in pulling(cfg).items():
                    pulls.start_soon(one, name, plugin)
            for name, sh in cfg.sharing.items():
                try:
                    async with self.open_adapter(sh.destination, cfg.plugins[sh.destination]) as adapter:
                        shared[name] = await self._sharer(cfg, name, adapter).share_once()
                except Exception as exc:
                    shared[name] = ShareResult(sharing=name, error=describe(real_cause(exc)))
            root.cancel_scope.cancel()

    async def _open_store(self, nursery: trio.Nursery, *, wait_for_space: bool = True) -> Store:
        """Start the store actor and load what the operator set through it (rule mutes).

        A full state_dir makes the store wait for space (the daemon says so: STATUS=, ``ctdctl status``)
        rather than end the daemon; a damaged database ends the start (``StartupError``).
        """
        store: Store = await nursery.start(
            partial(run_store, on_health=self._store_health, wait_for_space=wait_for_space), db_path(self.config)
        )
        self.mutes.update(await store.mutes())
        self._store = store  # only now: the mutes are known before anything plans a pass
        return store

    async def _extend_start_while_waiting(self) -> None:
        """While the store waits for space at start, keep systemd's start timeout from killing the daemon."""
        while not self._ready:
            if self._store_problem:
                self.notifier.extend_timeout(STARTUP_EXTENSION)
            await trio.sleep(STARTUP_EXTENSION / 4)

    def _store_health(self, health: Any) -> None:
        """The store's health changed (full, recovered, damaged): tell systemd, and wait longer while starting."""
        self._store_problem = health.problem if health.state != "ok" else None
        if not self._ready and health.state == "full":
            self.notifier.extend_timeout(STARTUP_EXTENSION)
        self.notifier.status(_status_line(self.health()))

    def health(self) -> dict[str, Any]:
        """``running``, ``starting`` or ``degraded``, and what is wrong (``ctdctl status``, systemd's STATUS=)."""
        problems: list[str] = []
        store_state = "starting"
        if self._store is not None:
            st = self._store.statistics()
            store_state = st.state
            if st.problem:
                problems.append(st.problem)
        elif self._store_problem:
            problems.append(self._store_problem)
        if not self._ready:
            state = "starting"
        elif store_state != "ok":
            state = "degraded"
        else:
            state = "running"
        return {"state": state, "store": store_state, "problems": problems}

    def _sharer(self, cfg: Config, name: str, adapter: Adapter) -> Sharer:
        """The Sharer of sharing configuration ``name``: the daemon's mutes and share rate included."""
        sh = cfg.sharing[name]
        rule, dest = cfg.rules[sh.rule], cfg.plugins[sh.destination]
        return Sharer(name, sh, rule, dest, adapter, self.store, mutes=self.mutes, rate=self.share_rate)

    async def _start_source(self, name: str, plugin: PluginConfig) -> None:
        status = SourceStatus(name, plugin)
        send, recv = trio.open_memory_channel[Ask](SYNC_QUEUE)
        await self.sources.start(name, plugin, SourceHandle(status, send), self._run_source, name, plugin, status, recv)

    async def _run_source(
        self,
        name: str,
        plugin: PluginConfig,
        status: SourceStatus,
        recv: trio.MemoryReceiveChannel[Ask],
        *,
        task_status: Any,
    ) -> None:
        async with self.open_adapter(name, plugin) as adapter:
            await run_source(
                name,
                plugin,
                adapter,
                self.store,
                self.allowlist,
                status,
                recv,
                self._on_commit,
                task_status=task_status,
            )

    def _on_commit(self, source: str, res: IngestResult) -> None:
        self.ingest_rate.add(res.new + res.updated)
        if res.new or res.updated or res.retracted:
            self.wake_sharing(source)

    async def _start_sharing(self, name: str) -> None:
        cfg = self.config
        send, recv = trio.open_memory_channel[Wake | Ask](SHARING_INBOX)
        handle = SharingHandle(SharingStatus(name, cfg.sharing[name]), send)
        await self.sharings.start(name, sharing_key(cfg, name), handle, self._run_sharing, cfg, name, handle, recv)

    async def _run_sharing(
        self,
        cfg: Config,
        name: str,
        handle: SharingHandle,
        inbox: trio.MemoryReceiveChannel[Wake | Ask],
        *,
        task_status: Any,
    ) -> None:
        sh = cfg.sharing[name]
        dest = cfg.plugins[sh.destination]
        async with self.open_adapter(sh.destination, dest) as adapter:
            handle.sharer = self._sharer(cfg, name, adapter)
            await run_sharing(handle.sharer, handle.status, inbox, task_status=task_status)

    async def _start_service(self, name: str, plugin: PluginConfig) -> None:
        """Plugins whose adapter serves something (an EDL web server) run it as an actor."""
        await self.services.start(name, plugin, None, self._run_service, name, plugin)

    async def _run_service(self, name: str, plugin: PluginConfig, *, task_status: Any) -> None:
        async with self.open_adapter(name, plugin) as adapter:
            await serve_with_restarts(name, adapter, task_status=task_status)

    def wake_sharing(self, source: str | None = None, *, rule: str | None = None) -> None:
        """Wake the sharing actors that read from ``source`` / use ``rule`` (or all of them)."""
        if self._sharings is None:
            return  # not started yet (or ctd run --once): no sharing actor to wake
        for name in self._sharings.names():
            handle: SharingHandle = self._sharings.get(name)
            sh = handle.status.sh
            if rule is not None:
                if sh.rule == rule:
                    handle.wake()
            elif source is None or source in sh.sources or source == sh.destination:
                handle.wake()

    async def _housekeeping(self) -> None:
        """Every housekeeping_interval: expire, then wake the sharings. A store error is logged (once
        while it lasts) and tried again at the next round; it never ends the daemon."""
        failing: str | None = None
        while True:
            await trio.sleep(float(self.config.daemon.housekeeping_interval))
            try:
                n = await self.store.expire(int(time.time()))
            except StoreDamaged:
                continue  # the store has stopped and said why: nothing to do until a restore
            except Exception as exc:
                msg = describe(exc)
                if msg != failing:
                    log.error(
                        "housekeeping failed",
                        ctd_event="housekeeping_failed",
                        error=msg,
                        exc_info=None if isinstance(exc, CtdError) else exc,
                    )
                failing = msg
                continue
            failing = None
            if n:
                log.info("indicators expired", ctd_event="indicators_expired", ctd_count=n)
                self.wake_sharing()

    # -- reload ------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; apply it only if the whole file is valid."""
        if not self._ready:
            raise ActorStopped("the daemon is still starting: reload when it is ready")
        async with self._reload_lock:
            path = self.config.path
            try:
                new = load_config(path)
            except ConfigError as exc:
                log.error(
                    "config rejected",
                    ctd_event="config_rejected",
                    error=str(exc),
                    config=path,
                    ctd_config_hash=file_hash(path),
                    running_config_hash=self.config.hash,
                )
                raise
            self.notifier.reloading()
            try:
                diff = await self._apply(new)
            finally:
                self.notifier.ready(status="reloaded")
            log.info(
                "config reloaded",
                ctd_event="config_reloaded",
                ctd_config_hash=new.hash,
                added=diff.added,
                removed=diff.removed,
                changed=diff.changed,
            )
            log_warnings(new)
            return {
                "config_hash": new.hash,
                "added": diff.added,
                "removed": diff.removed,
                "changed": diff.changed,
                "unchanged": diff.unchanged,
            }

    async def _apply(self, new: Config) -> ConfigDiff:
        old = self.config
        old_pull, new_pull = pulling(old), pulling(new)
        allow_changed = old.allowlist != new.allowlist
        diff = _restart_failed(diff_named(old_pull, new_pull), self.sources.failed())
        self.config = new
        if new.daemon.log_level != old.daemon.log_level:
            logs.configure_logging(new.daemon.log_level)
        if (new.daemon.socket, new.daemon.state_dir, new.daemon.metrics) != (
            old.daemon.socket,
            old.daemon.state_dir,
            old.daemon.metrics,
        ):
            log.warning("daemon.socket/state_dir/metrics changes take effect at the next restart")
        for name in diff.removed + diff.changed:
            await self.sources.stop(name)
        if allow_changed:
            # Running sources read the matcher per batch: no restart needed.
            self.allowlist.current = allowlist_matcher(new)
            n = await self.store.reapply_allowlist(self.allowlist.current, int(time.time()))
            log.info("allowlist applied", ctd_event="allowlist_applied", ctd_count=n)
        for name in diff.added + diff.changed:
            await self._start_source(name, new_pull[name])
        vdiff = _restart_failed(diff_named(served(old), served(new)), self.services.failed())
        for name in vdiff.removed + vdiff.changed:
            await self.services.stop(name)
        for name in vdiff.added + vdiff.changed:
            await self._start_service(name, new.plugins[name])
        sdiff = _restart_failed(
            diff_named({n: sharing_key(old, n) for n in old.sharing}, {n: sharing_key(new, n) for n in new.sharing}),
            self.sharings.failed(),
        )
        for name in sdiff.removed + sdiff.changed:
            await self.sharings.stop(name)
        for name in sdiff.added + sdiff.changed:
            await self._start_sharing(name)
        if allow_changed:
            self.wake_sharing()
        return ConfigDiff(
            added=diff.added + [f"sharing.{n}" for n in sdiff.added],
            removed=diff.removed + [f"sharing.{n}" for n in sdiff.removed],
            changed=diff.changed + [f"sharing.{n}" for n in sdiff.changed],
            unchanged=diff.unchanged + [f"sharing.{n}" for n in sdiff.unchanged],
        )

    # -- on-demand pulls -----------------------------------------------------------

    async def share(self, name: str, *, resync: bool = False, days: int | None = None) -> ShareResult:
        """Run a sharing pass now (after marking recent IoCs for re-sharing if ``resync``)."""
        handle: SharingHandle | None = self.sharings.get(name)
        if handle is None:
            raise NotFound(f"no sharing configuration named {name!r}")
        return await ask(handle.inbox, ShareNow(days=days, resync=resync), who=f"sharing {name!r}")

    async def sync(self, name: str) -> PullResult:
        handle: SourceHandle | None = self.sources.get(name)
        if handle is None:
            raise NotFound(f"no pulling source named {name!r}")
        return await ask(handle.sync_send, PullNow(), who=f"source {name!r}")


def _started(part: T | None) -> T:
    """A part of the daemon that exists once it has started; before, the caller is told to ask again."""
    if part is None:
        raise ActorStopped("the daemon is still starting: ask again")
    return part


def _restart_failed(diff: ConfigDiff, failed: list[str]) -> ConfigDiff:
    """A reload starts again what failed, as if its configuration had changed."""
    again = [n for n in diff.unchanged if n in failed]
    if not again:
        return diff
    return ConfigDiff(
        added=diff.added,
        removed=diff.removed,
        changed=diff.changed + again,
        unchanged=[n for n in diff.unchanged if n not in again],
    )


def _status_line(health: dict[str, Any]) -> str:
    """systemd's STATUS= for ``health``: what ``systemctl status ctd`` shows."""
    if health["state"] == "running":
        return "serving"
    return f"{health['state']}: {'; '.join(health['problems']) or 'opening the store'}"
