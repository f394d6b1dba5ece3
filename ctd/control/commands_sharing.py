"""Control commands about business rules and sharing configurations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ctd.errors import BadRequest, NotFound
from ctd.model import iso, now
from ctd.rules.compiler import Rule
from ctd.sharing.actor import Sharer, muted
from ctd.store import PreviewTarget, Selection, Store

if TYPE_CHECKING:
    from ctd.control.view import DaemonView


def _listed(names: Any) -> str:
    return ", ".join(sorted(names)) or "none configured"


class SharingCommands:
    d: DaemonView

    # -- rules and sharing -----------------------------------------------------------

    def _rule_name(self, args: dict[str, Any]) -> str:
        name = args.get("name")
        if not isinstance(name, str) or name not in self.d.config.rules:
            raise NotFound(f"no rule named {name!r} (known: {_listed(self.d.config.rules)})")
        return name

    def _sharing_name(self, args: dict[str, Any]) -> str:
        name = args.get("name")
        if not isinstance(name, str) or name not in self.d.config.sharing:
            raise NotFound(f"no sharing configuration named {name!r} (known: {_listed(self.d.config.sharing)})")
        return name

    @staticmethod
    def _days(args: dict[str, Any]) -> int | None:
        days = args.get("days")
        if days is not None and (not isinstance(days, int) or not 1 <= days <= 3650):
            raise BadRequest("days must be between 1 and 3650")
        return days

    def _mute_until(self, name: str) -> str | None:
        override = self.d.mutes.get(name)
        if override is not None:
            return iso(override) if override else None
        until = self.d.config.rules[name].muted_until
        return until.isoformat() if until else None

    async def rules_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.d.config
        at = now()
        return [
            {
                "name": name,
                "filter": r.filter,
                "exceptions": r.exceptions,
                "description": r.description,
                "muted_until": self._mute_until(name),
                "muted": muted(r, at, self.d.mutes.get(name)),
                "used_by": sorted(n for n, sh in cfg.sharing.items() if sh.rule == name),
            }
            for name, r in sorted(cfg.rules.items())
        ]

    async def rules_test(self, args: dict[str, Any]) -> dict[str, Any]:
        """Dry run of a rule: nothing is sent anywhere."""
        name = self._rule_name(args)
        days = self._days(args)
        cfg = self.d.config
        rc = cfg.rules[name]
        at = now()
        sharers = []
        for sname, sh in sorted(cfg.sharing.items()):
            handle = self.d.sharings.get(sname) if sh.rule == name and self.d.sharings else None
            if handle is not None:
                sharers.append((sname, handle.sharer))
        since = at - days * 86400 if days else None
        out = await dry_run(self.d.store, Rule(rc.filter, rc.exceptions), sharers, at=at, seen_since=since)
        sharing, warnings = out.pop("sharing"), out.pop("warnings")
        out.update(
            rule=name, days=days, muted=muted(rc, at, self.d.mutes.get(name)), sharing=sharing, warnings=warnings
        )
        return out

    async def _sharing_entry(self, name: str) -> dict[str, Any]:
        handle = self.d.sharings.get(name) if self.d.sharings else None
        sh = self.d.config.sharing[name]
        entry = (
            handle.status.as_dict()
            if handle
            else {
                "name": name,
                "sources": sh.sources,
                "rule": sh.rule,
                "destination": sh.destination,
                "action": sh.action,
                "state": "stopped",
            }
        )
        ledger = await self.d.store.ledger_counts(name)
        entry["counts"] = ledger["counts"]
        entry["apply_pending"] = ledger.get("apply_pending", False)  # a two-phase destination owes its apply
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
        entry["problems"] = await self.d.store.ledger_rows(name, ("failed", "unshared", "retract_pending"), 50)
        return entry

    async def sharing_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._sharing_name(args)
        result = await self.d.share(name, resync=True, days=self._days(args))
        return msgspec.structs.asdict(result)


async def dry_run(
    store: Store, rule: Rule, sharers: Sequence[tuple[str, Sharer]], *, at: int, seen_since: int | None
) -> dict[str, Any]:
    """What ``rule`` selects now and, for each sharing configuration it feeds, what that one would send,
    against the destination's limits: counts by type, serialised size, warnings, and a sample of the rule's.

    One pass of the store serves the rule and every sharing whose rule is the
    same one (a sharing still running an older version of the rule, until it
    restarts, gets a pass of its own).
    """
    same = [(n, sh) for n, sh in sharers if repr(sh.rule) == repr(rule)]
    out = await store.rule_test(
        Selection(rule=rule, at=at, seen_since=seen_since),
        targets=[_target(sh, at, seen_since) for _, sh in same],
    )
    found = dict(zip((n for n, _ in same), out.pop("targets"), strict=True))
    for n, sh in sharers:
        if n not in found:
            own = sh.selection(at, seen_since=seen_since)
            found[n] = (await store.rule_test(own, targets=[_target(sh, at, seen_since)], sample=0))["targets"][0]
    out["sharing"], out["warnings"] = [], []
    for n, sh in sharers:
        res = found[n]
        warnings = limit_warnings(res["total"], res["bytes"], sh.max_entries, sh.max_bytes)
        out["sharing"].append(
            {
                "name": n,
                "destination": sh.sh.destination,
                "action": sh.sh.action,
                "total": res["total"],
                "by_type": res["by_type"],
                "bytes": res["bytes"],
                "max_entries": sh.max_entries,
                "max_bytes": sh.max_bytes,
                "warnings": warnings,
            }
        )
        out["warnings"] += [f"{n}: {w}" for w in warnings]
    return out


def _target(sharer: Sharer, at: int, seen_since: int | None) -> PreviewTarget:
    """How ``sharer``'s own selection narrows the rule's, and how its destination counts bytes."""
    sel = sharer.selection(at, seen_since=seen_since)
    return PreviewTarget(
        types=sel.types,
        sources=sel.sources,
        not_from=sel.not_from,
        size=sharer.spec.size,
        overhead=sharer.spec.entry_overhead,
    )


def limit_warnings(total: int, size: int, max_entries: int | None, max_bytes: int | None) -> list[str]:
    """Warnings when a destination's limit would be exceeded (or is above 90%)."""
    out = []
    for what, n, cap in (("entries", total, max_entries), ("bytes", size, max_bytes)):
        if cap is None:
            continue
        if n > cap:
            left_out = n - cap if what == "entries" else "entries"
            out.append(f"{n} {what} exceed the destination limit of {cap}: the oldest {left_out} would not be shared")
        elif n > 0.9 * cap:
            out.append(f"{n} {what} is above 90% of the destination limit of {cap}")
    return out
