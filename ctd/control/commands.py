"""Control commands: what each ``ctdctl`` request does inside the daemon."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from ctd import __version__
from ctd.canon import candidates
from ctd.control.access import ADMIN, READ, AccessPolicy
from ctd.control.commands_admin import AdminCommands, known_name
from ctd.control.commands_db import DbCommands
from ctd.control.commands_sharing import SharingCommands
from ctd.errors import BadRequest, ConfigError, ControlError, NotFound
from ctd.model import INDICATOR_TYPES

if TYPE_CHECKING:
    from ctd.control.view import DaemonView

log = structlog.get_logger("ctd.control")

EXPORT_PAGE = 1000


def _opt_bool(args: dict[str, Any], key: str) -> bool | None:
    v = args.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise BadRequest(f"{key} must be true, false or null")


class Commands(SharingCommands, AdminCommands, DbCommands):
    def __init__(self, daemon: DaemonView, policy: AccessPolicy) -> None:
        self.d = daemon
        self.policy = policy
        self.handlers: dict[str, tuple[str, Any]] = {
            # read: members of socket_group; admin: root, the daemon's user, admin_group
            "status": (READ, self.status),
            "sources": (READ, self.list_sources),
            "sources.show": (READ, self.source_show),
            "stats": (READ, self.stats),
            "version": (READ, self.version),
            "indicators.show": (READ, self.show),
            "indicators.search": (READ, self.search),
            "indicators.export": (READ, self.export),
            "rules.list": (READ, self.rules_list),
            "rules.test": (READ, self.rules_test),
            "sharing.list": (READ, self.sharing_list),
            "sharing.show": (READ, self.sharing_show),
            "checkpoint.show": (READ, self.checkpoint_show),
            "plugins.list": (READ, self.plugins_list),
            "reload": (ADMIN, self.reload),
            "sync": (ADMIN, self.sync),
            "sharing.sync": (ADMIN, self.sharing_sync),
            "checkpoint.set": (ADMIN, self.checkpoint_set),
            "checkpoint.reset": (ADMIN, self.checkpoint_reset),
            "plugins.check": (ADMIN, self.plugins_check),
            "indicators.retract": (ADMIN, self.indicators_retract),
            "indicators.unretract": (ADMIN, self.indicators_unretract),
            "rules.mute": (ADMIN, self.rules_mute),
            "rules.unmute": (ADMIN, self.rules_unmute),
            # An integrity check reads the whole database: an admin's decision, like a backup.
            "db.backup": (ADMIN, self.db_backup),
            "db.check": (ADMIN, self.db_check),
        }

    def is_read(self, cmd: str) -> bool:
        """A command that changes nothing (logged at debug by the control server)."""
        entry = self.handlers.get(cmd)
        return entry is not None and entry[0] == READ

    async def dispatch(self, request: Any, peer: Any) -> Any:
        entry = self.handlers.get(request.cmd)
        if entry is None:
            raise BadRequest(f"unknown command {request.cmd!r}")
        needed, handler = entry
        self.policy.check(needed, request.cmd, peer)
        args = request.args or {}
        if not isinstance(args, dict):
            raise BadRequest("args must be an object")
        return await handler(args)

    async def _sources(self, with_counts: bool = True) -> list[dict[str, Any]]:
        # Without counts (ctdctl sync polling for progress) this reads no table.
        counts = await self.d.store.source_counts() if with_counts else {}
        out = []
        for name in self.d.sources.names():
            handle = self.d.sources.get(name)
            out.append(handle.status.as_dict(counts.get(name, 0)))
        for name, plugin in sorted(self.d.config.plugins.items()):
            if not plugin.pull:
                out.append(
                    {
                        "name": name,
                        "adapter": plugin.adapter,
                        "pull": False,
                        "state": "stopped",
                        "last_run": None,
                        "last_success": None,
                        "last_error": None,
                        "next_run": None,
                        "last_counts": {},
                        "totals": {},
                        "indicators": counts.get(name, 0),
                    }
                )
        return out

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        cfg = self.d.config
        health = self.d.health()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.d.started_at, 1),
            "config_path": cfg.path,
            "config_hash": cfg.hash,
            # running | starting | degraded; the store: ok | full | damaged; problems: one line each
            "state": health["state"],
            "store": health["store"],
            "problems": health["problems"],
            "indicators": await self.d.store.counts(),
            "sources": await self._sources(),
        }

    async def list_sources(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._sources(with_counts=_opt_bool(args, "counts") is not False)

    async def source_show(self, args: dict[str, Any]) -> dict[str, Any]:
        """One source as ``sources`` lists it, plus the records it rejected lately by reason class."""
        name = args.get("name")
        if not isinstance(name, str):
            raise BadRequest("sources show needs a source name")
        entry = next((s for s in await self._sources() if s["name"] == name), None)
        if entry is None:
            raise NotFound(f"no source {name!r} in the config")
        return {**entry, "rejected": await self.d.store.rejections(name)}

    async def sync(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("source")
        if not isinstance(name, str):
            raise BadRequest("sync needs a source name")
        if name not in self.d.sources.names():
            known = ", ".join(sorted(self.d.sources.names())) or "none running"
            raise NotFound(f"no pulling source named {name!r} (known: {known})")
        result = await self.d.sync(name)  # NotFound if it stopped meanwhile
        return msgspec.structs.asdict(result)

    async def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.d.reload()
        except ConfigError as exc:
            path = self.d.config.path
            raise ControlError(f"config {path} rejected, still running the previous one: {exc}") from None

    async def show(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        value = args.get("value")
        if not isinstance(value, str) or not value.strip():
            raise BadRequest("show needs a value")
        type_ = args.get("type")
        if type_ is not None:
            known_name(type_, INDICATOR_TYPES, "indicator type")
        return await self.d.store.show(candidates(value, type_), value)

    async def _filters(self, args: dict[str, Any]) -> tuple[str | None, str | None]:
        """--type and --source of search/export: a name that matches nothing is an error, not an empty answer."""
        type_, source = args.get("type"), args.get("source")
        if type_ is not None:
            known_name(type_, INDICATOR_TYPES, "indicator type")
        if source is not None and source not in self.d.config.plugins:
            # A source removed from the config may still have indicators in the store.
            known_name(source, {*self.d.config.plugins, *await self.d.store.source_counts()}, "source")
        return type_, source

    async def search(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 100000:
            raise BadRequest("limit must be between 1 and 100000")
        type_, source = await self._filters(args)
        return await self.d.store.search(
            type_=type_,
            source=source,
            active=_opt_bool(args, "active"),
            limit=limit,
        )

    async def export(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        (type_, source), active = await self._filters(args), _opt_bool(args, "active")

        async def items() -> AsyncIterator[dict[str, Any]]:
            after = 0
            while True:
                page, after = await self.d.store.export_page(
                    after=after,
                    limit=EXPORT_PAGE,
                    type_=type_,
                    source=source,
                    active=active,
                )
                for item in page:
                    yield item
                if len(page) < EXPORT_PAGE:
                    return

        return items()
