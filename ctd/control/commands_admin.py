"""Control commands for operators: checkpoints, plugins, manual retraction, mutes, stats."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import structlog
import trio

from ctd import __version__
from ctd.canon import candidates
from ctd.config import parse_duration
from ctd.config_warnings import tls_unverified
from ctd.errors import BadRequest, NotFound, describe
from ctd.model import INDICATOR_TYPES, iso, now, parse_time
from ctd.plugins import adapter_class, open_adapter

if TYPE_CHECKING:
    from ctd.control.view import DaemonView

log = structlog.get_logger("ctd.control")

CHECK_TIMEOUT = 30.0


def known_name(name: Any, known: Iterable[str], what: str) -> str:
    """``name`` if it is one of ``known``; else an error listing them (never a silent no-op)."""
    names = sorted(known)
    if isinstance(name, str) and name in names:
        return name
    listed = ", ".join(names) if names else "none configured"
    raise BadRequest(f"unknown {what} {name!r} (known: {listed})")


def _when(text: Any, what: str) -> int:
    """An ISO 8601 time, or a duration from now (``2h``, ``7d``)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} needs a time (ISO 8601) or a duration like 2h")
    try:
        return now() + int(parse_duration(text))
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise BadRequest(
            f"cannot read {what} {text!r}: use ISO 8601 (2026-12-01T08:00:00Z) or a duration (2h)"
        ) from None


async def _check(what: str, call: Awaitable[str | None], note: str | None = None) -> dict[str, Any]:
    """One check of ``plugins check``: its outcome, as a row (message None: the adapter has no such check)."""
    try:
        message = await call
    except Exception as exc:
        return {"check": what, "ok": False, "message": describe(exc)}
    if message is not None and note:
        message = f"{note}; {message}"
    return {"check": what, "ok": True, "message": message if message is not None else note}


class AdminCommands:
    d: DaemonView

    def _plugin_name(self, args: dict[str, Any], key: str = "name", pulling: bool = False) -> str:
        name = args.get(key)
        plugins = self.d.config.plugins
        if not isinstance(name, str) or name not in plugins or (pulling and not plugins[name].pull):
            known = ", ".join(sorted(n for n, p in plugins.items() if p.pull or not pulling)) or "none configured"
            raise NotFound(f"no {'pulling ' if pulling else ''}plugin named {name!r} (known: {known})")
        return name

    async def checkpoint_show(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._plugin_name(args, "source")
        cp = await self.d.store.checkpoint(name)
        return {
            "source": name,
            "last_run": iso(cp.last_run),
            "last_success": iso(cp.last_success),
            "last_error": cp.last_error,
            "resume_point": cp.sub,
            "cursor": cp.cursor,
        }

    async def checkpoint_set(self, args: dict[str, Any]) -> dict[str, Any]:
        """The reference system's editable "Last Run": the next pull starts from there."""
        name = self._plugin_name(args, "source", pulling=True)
        days, since = args.get("days"), args.get("since")
        if (days is None) == (since is None):
            raise BadRequest("give exactly one of --since or --days")
        if days is not None:
            if not isinstance(days, int) or not 0 <= days <= 3650:
                raise BadRequest("days must be between 0 and 3650")
            when = now() - days * 86400
        else:
            try:
                when = parse_time(str(since))
            except ValueError:
                raise BadRequest(f"cannot read --since {since!r}: use ISO 8601") from None
        await self.d.store.set_checkpoint(name, when)
        log.info("checkpoint set", ctd_event="checkpoint_set", ctd_source=name, last_run=iso(when))
        return {
            "source": name,
            "last_run": iso(when),
            "note": f"the next pull of {name} starts from {iso(when)}; `ctdctl sync {name}` pulls now",
        }

    async def checkpoint_reset(self, args: dict[str, Any]) -> dict[str, Any]:
        """Forget where a source is (checkpoint, resume point, cursor): the next pull starts as the first did.

        For re-reading after an upgrade that parses differently: an incremental
        source (a MISP feed's events done, a TAXII collection's date) otherwise
        never reads again what an older ctd rejected.
        """
        name = self._plugin_name(args, "source", pulling=True)
        await self.d.store.set_checkpoint(name, None)
        log.info("checkpoint reset", ctd_event="checkpoint_reset", ctd_source=name)
        return {
            "source": name,
            "last_run": None,
            "note": f"the next pull of {name} starts afresh (initial_range back) and reads again what the source "
            f"still has; `ctdctl sync {name}` pulls now",
        }

    async def plugins_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.d.config
        out = []
        for name, p in sorted(cfg.plugins.items()):
            cls = adapter_class(p.adapter)
            actions = cls.ACTIONS
            out.append(
                {
                    "name": name,
                    "adapter": p.adapter,
                    "pull": p.pull,
                    "verify_tls": not tls_unverified(p),
                    "can_pull": cls.can_pull,
                    "can_push": cls.can_push,
                    "actions": {a: {"mode": spec.mode, "description": spec.description} for a, spec in actions.items()},
                    "sources_of": sorted(n for n, sh in cfg.sharing.items() if name in sh.sources),
                    "destination_of": sorted(n for n, sh in cfg.sharing.items() if sh.destination == name),
                }
            )
        return out

    async def plugins_check(self, args: dict[str, Any]) -> dict[str, Any]:
        """The adapter's connectivity test, then each sharing target it is the destination of.

        A destination-only plugin (a ``file`` plugin with ``pull = false``) has nothing to
        connect to: what it writes is checked instead (params valid, directory writable).
        """
        name = self._plugin_name(args)
        plugin = self.d.config.plugins[name]
        sharings = sorted((n, sh) for n, sh in self.d.config.sharing.items() if sh.destination == name)
        checks: list[dict[str, Any]] = []
        try:
            async with open_adapter(name, plugin) as adapter:
                with trio.move_on_after(CHECK_TIMEOUT) as scope:
                    checks.append(await _check("connectivity", adapter.check()))
                    for sharing, sh in sharings:
                        what = f"sharing {sharing} ({sh.action})"
                        checks.append(await _check(what, adapter.check_target(sh.action, sh.params), "params valid"))
                if scope.cancelled_caught:
                    checks.append(
                        {"check": "deadline", "ok": False, "message": f"no answer within {CHECK_TIMEOUT:.0f}s"}
                    )
        except Exception as exc:
            checks.append({"check": "open", "ok": False, "message": describe(exc)})
        ran = [c for c in checks if c["message"] is not None]
        ok = all(c["ok"] for c in checks)
        if not ran:
            message = "this adapter has no connectivity check"
        elif len(ran) == 1 and ran[0]["check"] == "connectivity":
            message = ran[0]["message"]
        else:
            message = "; ".join(f"{c['check']}: {c['message']}" for c in ran)
        return {"plugin": name, "ok": ok, "message": message, "checks": ran}

    def _indicator_args(self, args: dict[str, Any], what: str) -> tuple[str, str | None, str | None]:
        """VALUE, --source and --type of retract/unretract, checked (unknown ones listed)."""
        value = args.get("value")
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"{what} needs a value")
        source = args.get("source")
        if source is not None:
            known_name(source, self.d.config.plugins, "source")
        type_ = args.get("type")
        if type_ is not None:
            known_name(type_, INDICATOR_TYPES, "indicator type")
        return value, source, type_

    async def indicators_retract(self, args: dict[str, Any]) -> dict[str, Any]:
        """Manual retraction (audited), kept against re-reports until lifted or ``until``."""
        value, source, type_ = self._indicator_args(args, "retract")
        until = None
        if args.get("until") is not None:
            until = _when(args.get("until"), "--until")
            if until <= now():
                raise BadRequest("--until must be in the future")
        rows = await self.d.store.retract(candidates(value, type_), source=source, now=now(), until=until)
        if rows is None:
            raise NotFound(f"no indicator {value}")
        log.info(
            "indicator retracted by operator",
            ctd_event="indicator_retracted_manually",
            value=value,
            ctd_source=source,
            ctd_count=rows,
            until=iso(until),
        )
        self.d.wake_sharing()
        return {"value": value, "source": source, "retracted": rows, "until": iso(until)}

    async def indicators_unretract(self, args: dict[str, Any]) -> dict[str, Any]:
        """Lift an operator's retraction (audited): the value counts again from a source's next report."""
        value, source, type_ = self._indicator_args(args, "unretract")
        lifted = await self.d.store.unretract(candidates(value, type_), source=source)
        if lifted is None:
            raise NotFound(f"no indicator {value}")
        if not lifted:
            whose = f" for source {source!r}" if source else ""
            raise NotFound(f"{value} has no operator retraction{whose} (see `ctdctl indicators show {value}`)")
        log.info(
            "operator retraction lifted",
            ctd_event="indicator_unretracted_manually",
            value=value,
            ctd_source=source,
            ctd_count=lifted,
        )
        return {
            "value": value,
            "source": source,
            "lifted": lifted,
            "note": "the value counts again from each source's next report (`ctdctl sync SOURCE` pulls now)",
        }

    async def rules_mute(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._rule_name(args)  # type: ignore[attr-defined]
        until = _when(args.get("until"), "--until")
        if until <= now():
            raise BadRequest("--until must be in the future")
        await self.d.store.set_mute(name, until)
        self.d.mutes[name] = until
        log.info("rule muted", ctd_event="rule_muted", ctd_rule=name, muted_until=iso(until))
        self.d.wake_sharing(rule=name)
        return {"rule": name, "muted_until": iso(until)}

    async def rules_unmute(self, args: dict[str, Any]) -> dict[str, Any]:
        name = self._rule_name(args)  # type: ignore[attr-defined]
        await self.d.store.set_mute(name, 0)
        self.d.mutes[name] = 0
        log.info("rule unmuted", ctd_event="rule_unmuted", ctd_rule=name)
        self.d.wake_sharing(rule=name)
        return {"rule": name, "muted_until": None}

    async def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.d
        store = d.store
        sharing = {}
        for name in sorted(d.config.sharing):
            sharing[name] = (await store.ledger_counts(name))["counts"]
        queues: dict[str, int] = {"store": store.statistics().queued}
        if d.sharings is not None:
            for name in d.sharings.names():
                queues[f"sharing.{name}"] = d.sharings.get(name).inbox.statistics().current_buffer_used
        if d.sources is not None:
            for name in d.sources.names():
                queues[f"source.{name}"] = d.sources.get(name).sync_send.statistics().current_buffer_used
        st = store.statistics()
        return {
            "indicators": await store.counts(),
            "by_source": await store.source_counts(),
            "sharing": sharing,
            "store": {**await store.sizes(), "requests": st.handled, "busy_seconds": round(st.busy_seconds, 3)},
            "queues": queues,
            "rates": {"ingested": d.ingest_rate.totals(), "shared": d.share_rate.totals()},
        }

    async def version(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": __version__,
            "python": sys.version.split()[0],
            "trio": trio.__version__,
            "httpx": httpx.__version__,
            "msgspec": msgspec.__version__,
            **self.d.store.engine_versions(),
        }
