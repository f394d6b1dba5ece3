"""Control commands: what each ``ctdctl`` request does inside the daemon."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from ctd import __version__, sharing_sql, store_query
from ctd.canon import canonicalize, detect_type
from ctd.errors import BadRequest, InvalidIndicator
from ctd.model import INDICATOR_TYPES, iso, now
from ctd.rules_eval import Rule
from ctd.sharing import muted

if TYPE_CHECKING:
    from ctd.daemon import Daemon

log = structlog.get_logger("ctd.control")

EXPORT_PAGE = 1000


def candidates(value: str, type_: str | None) -> list[tuple[str, str]]:
    """Canonical (type, value) pairs a user-typed value may stand for."""
    types = [type_] if type_ else [t for t in (detect_type(value),) if t] + list(INDICATOR_TYPES)
    out = []
    for t in dict.fromkeys(types):
        try:
            pair = canonicalize(t, value)
        except InvalidIndicator:
            continue
        if pair not in out:
            out.append(pair)
    return out


def _opt_bool(args: dict[str, Any], key: str) -> bool | None:
    v = args.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise BadRequest(f"{key} must be true, false or null")


class Commands:
    def __init__(self, daemon: "Daemon") -> None:
        self.d = daemon

    async def dispatch(self, request: Any, peer: Any) -> Any:
        handler = self._handlers().get(request.cmd)
        if handler is None:
            raise BadRequest(f"unknown command {request.cmd!r}")
        args = request.args or {}
        if not isinstance(args, dict):
            raise BadRequest("args must be an object")
        return await handler(args)

    def _handlers(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sources": self.list_sources,
            "sync": self.sync,
            "reload": self.reload,
            "indicators.show": self.show,
            "indicators.search": self.search,
            "indicators.export": self.export,
            "rules.list": self.rules_list,
            "rules.test": self.rules_test,
            "sharing.list": self.sharing_list,
            "sharing.show": self.sharing_show,
            "sharing.sync": self.sharing_sync,
        }

    async def _sources(self) -> list[dict[str, Any]]:
        counts = await self.d.store.call(store_query.source_counts)
        out = []
        for name in self.d.sources.names():
            handle = self.d.sources.get(name)
            out.append(handle.status.as_dict(counts.get(name, 0)))
        for name, plugin in sorted(self.d.config.plugins.items()):
            if not plugin.pull:
                out.append({"name": name, "adapter": plugin.adapter, "pull": False, "state": "stopped",
                            "last_run": None, "last_success": None, "last_error": None, "next_run": None,
                            "last_counts": {}, "totals": {}, "indicators": counts.get(name, 0)})
        return out

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        cfg = self.d.config
        return {
            "version": __version__, "pid": os.getpid(),
            "uptime_s": round(time.time() - self.d.started_at, 1),
            "config_path": cfg.path, "config_hash": cfg.hash,
            "indicators": await self.d.store.call(store_query.counts),
            "sources": await self._sources(),
        }

    async def list_sources(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._sources()

    async def sync(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("source")
        if not isinstance(name, str):
            raise BadRequest("sync needs a source name")
        from ctd.errors import ConfigError, ControlError

        try:
            result = await self.d.sync(name)
        except ConfigError as exc:
            raise ControlError(str(exc)) from None
        import msgspec

        return msgspec.structs.asdict(result)

    async def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        from ctd.errors import ConfigError, ControlError

        try:
            return await self.d.reload()
        except ConfigError as exc:
            raise ControlError(f"config rejected, still running the previous one: {exc}") from None

    async def show(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        value = args.get("value")
        if not isinstance(value, str) or not value.strip():
            raise BadRequest("show needs a value")
        type_ = args.get("type")
        if type_ is not None and type_ not in INDICATOR_TYPES:
            raise BadRequest(f"unknown indicator type {type_!r}")
        return await self.d.store.call(store_query.show, candidates(value, type_), value)

    async def search(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 100000:
            raise BadRequest("limit must be between 1 and 100000")
        return await self.d.store.call(
            store_query.search, type_=args.get("type"), source=args.get("source"),
            active=_opt_bool(args, "active"), limit=limit,
        )

    async def export(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        type_, source, active = args.get("type"), args.get("source"), _opt_bool(args, "active")

        async def items() -> AsyncIterator[dict[str, Any]]:
            after = 0
            while True:
                page, after = await self.d.store.call(
                    store_query.export_page, after=after, limit=EXPORT_PAGE,
                    type_=type_, source=source, active=active,
                )
                for item in page:
                    yield item
                if len(page) < EXPORT_PAGE:
                    return

        return items()

    # -- rules and sharing -----------------------------------------------------------

    def _rule_name(self, args: dict[str, Any]) -> str:
        name = args.get("name")
        if not isinstance(name, str) or name not in self.d.config.rules:
            raise BadRequest(f"no rule named {name!r}")
        return name

    def _sharing_name(self, args: dict[str, Any]) -> str:
        name = args.get("name")
        if not isinstance(name, str) or name not in self.d.config.sharing:
            raise BadRequest(f"no sharing configuration named {name!r}")
        return name

    @staticmethod
    def _days(args: dict[str, Any]) -> int | None:
        days = args.get("days")
        if days is not None and (not isinstance(days, int) or not 1 <= days <= 3650):
            raise BadRequest("days must be between 1 and 3650")
        return days

    async def rules_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.d.config
        at = now()
        return [
            {"name": name, "filter": r.filter, "exceptions": r.exceptions, "description": r.description,
             "muted_until": r.muted_until.isoformat() if r.muted_until else None, "muted": muted(r, at),
             "used_by": sorted(n for n, sh in cfg.sharing.items() if sh.rule == name)}
            for name, r in sorted(cfg.rules.items())
        ]

    async def rules_test(self, args: dict[str, Any]) -> dict[str, Any]:
        """Dry run of a rule: nothing is sent anywhere."""
        name = self._rule_name(args)
        days = self._days(args)
        cfg = self.d.config
        rc = cfg.rules[name]
        rule = Rule(rc.filter, rc.exceptions)
        at = now()
        recent = " AND i.last_seen >= ?" if days else ""
        extra = [at - days * 86400] if days else []
        rule_sql, params = rule.sql(at)
        out = await self.d.store.call(
            sharing_sql.rule_test, where=f"i.active = 1 AND ({rule_sql}){recent}", params=[*params, *extra]
        )
        out.update(rule=name, days=days, muted=muted(rc, at), sharing=[], warnings=[])
        for sname, sh in sorted(cfg.sharing.items()):
            if sh.rule != name:
                continue
            handle = self.d.sharings.get(sname) if self.d.sharings else None
            if handle is None:
                continue
            sharer = handle.sharer
            where, wparams = sharer.where(at)
            res = await self.d.store.call(
                sharing_sql.rule_test, where=where + recent, params=[*wparams, *extra],
                size=sharer.spec.size, overhead=sharer.spec.entry_overhead, sample=0,
            )
            warnings = limit_warnings(res["total"], res["bytes"], sharer.max_entries, sharer.max_bytes)
            out["sharing"].append({
                "name": sname, "destination": sh.destination, "action": sh.action, "total": res["total"],
                "by_type": res["by_type"], "bytes": res["bytes"], "max_entries": sharer.max_entries,
                "max_bytes": sharer.max_bytes, "warnings": warnings,
            })
            out["warnings"] += [f"{sname}: {w}" for w in warnings]
        return out

    async def _sharing_entry(self, name: str) -> dict[str, Any]:
        handle = self.d.sharings.get(name) if self.d.sharings else None
        sh = self.d.config.sharing[name]
        entry = handle.status.as_dict() if handle else {
            "name": name, "sources": sh.sources, "rule": sh.rule, "destination": sh.destination,
            "action": sh.action, "state": "stopped"}
        ledger = await self.d.store.call(sharing_sql.ledger_counts, name)
        entry["counts"] = ledger["counts"]
        entry["last_run"] = entry.get("last_run") or iso(ledger["last_run"])
        entry["last_success"] = entry.get("last_success") or iso(ledger["last_success"])
        entry["last_error"] = entry.get("last_error") or ledger["last_error"]
        return entry

    async def sharing_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [await self._sharing_entry(n) for n in sorted(self.d.config.sharing)]

    async def sharing_show(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._sharing_name(args)
        entry = await self._sharing_entry(name)
        sh = self.d.config.sharing[name]
        entry["interval_s"] = float(sh.interval)
        entry["params"] = msgspec.to_builtins(sh.params)
        entry["problems"] = await self.d.store.call(
            sharing_sql.ledger_rows, name, ("failed", "unshared", "retract_pending"), 50
        )
        return entry

    async def sharing_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._sharing_name(args)
        result = await self.d.share(name, resync=True, days=self._days(args))
        return msgspec.structs.asdict(result)


def limit_warnings(total: int, size: int, max_entries: int | None, max_bytes: int | None) -> list[str]:
    """Warnings when a destination's limit would be exceeded (or is above 90%)."""
    out = []
    for what, n, cap in (("entries", total, max_entries), ("bytes", size, max_bytes)):
        if cap is None:
            continue
        if n > cap:
            out.append(f"{n} {what} exceed the destination limit of {cap}: the oldest {n - cap if what == 'entries' else 'entries'} would not be shared")
        elif n > 0.9 * cap:
            out.append(f"{n} {what} is above 90% of the destination limit of {cap}")
    return out
