"""The ``defender`` adapter: Microsoft Defender for Endpoint alerts in, custom indicators out.

The app registration lives once in ``[tenants.NAME]`` and plugins name it
(``tenant = "NAME"``). Pulling reads the evidence of alerts updated since the
last cycle (``pull_from = "alerts"``), leaving out alerts that custom
indicators raised (ctd's own blocks at work), or takes a full snapshot of the
custom indicators others made (``pull_from = "indicators"``). Pushing imports
indicators in batches of 500 (action ``indicator``); withdrawing deletes, with
``BatchDelete``, exactly the ids ctd recorded when it created them. An
indicator someone else made for the same value is reported, never overwritten
or deleted.

The tenant holds at most 15,000 active indicators: the action declares that
cap, so the sharing layer shares the newest and reports the rest unshared.
Throttling (100 calls/min and 1,500/hour; imports 30/min) surfaces as 429
with ``Retry-After``, which the actor waits; the adapter never sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import Meta

from ctd.adapters.defender import mapping as dm
from ctd.adapters.defender.api import ALERTS, BATCH_DELETE, IMPORT, INDICATORS, DefenderApi, DefenderTenant, decode
from ctd.adapters.tenant import TenantHooks
from ctd.model import (
    ActionSpec,
    Adapter,
    AuthError,
    Batch,
    ConfigError,
    InvalidIndicator,
    PullContext,
    PushResult,
    Rejected,
    ShareItem,
    Sighting,
    iso,
)

_Name = Annotated[str, Meta(min_length=1, max_length=255)]
Action = Literal["Audit", "Alert", "Warn", "Block", "BlockAndRemediate", "AlertAndBlock", "Allowed"]


class DefenderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``defender`` adapter's own ``[plugins.NAME]`` keys."""

    tenant: _Name  # a [tenants.NAME] table
    pull_from: Literal["alerts", "indicators"] = "alerts"
    page_size: Annotated[int, Meta(ge=1, le=dm.MAX_TOP)] = 1000
    resolved_tenant: DefenderTenant | None = None  # filled in by ``bind`` from [tenants.NAME]


class IndicatorParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``indicator`` action."""

    action: Action = "Audit"
    severity: Literal["Informational", "Low", "Medium", "High"] | None = None  # None: from the IoC
    generate_alert: bool = True  # Audit always alerts
    rbac_groups: tuple[str, ...] = ()  # device group names the indicator applies to (none: all)
    max_entries: Annotated[int, Meta(ge=1, le=dm.MAX_ACTIVE)] | None = None


class DefenderAdapter(TenantHooks, Adapter):
    """Pull alert evidence (or others' indicators) from Defender for Endpoint; import and delete indicators."""

    TENANT = DefenderTenant
    CLIENT_HEADERS = {"Accept": "application/json"}

    Config: ClassVar[type[DefenderConfig]] = DefenderConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "indicator": ActionSpec(
            description="import custom indicators (files, IPs, domains, URLs); BatchDelete by id on withdrawal",
            mode="incremental",
            carries_expiry=True,  # the destination drops an entry at the expiry it was given
            params=IndicatorParams,
            max_entries=dm.MAX_ACTIVE,  # active indicators per tenant
            batch_size=dm.MAX_BATCH,
            types=tuple(dm.TO_TYPE),
        ),
    }

    def __init__(self, name: str, config: DefenderConfig, client: httpx.AsyncClient | None = None) -> None:
        tenant = config.resolved_tenant
        if tenant is None:
            raise ConfigError(f"tenant {config.tenant!r} was not bound (the config was not loaded with parse_config)")
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = DefenderApi(self.client, tenant)

    # --- config hooks ------------------------------------------------------------------

    @classmethod
    def limits(cls, action: str, params: IndicatorParams) -> tuple[int | None, int | None]:
        return params.max_entries, None

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- pull ---------------------------------------------------------------------------

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        if self.config.pull_from == "indicators":
            async for batch in self._pull_indicators():
                yield batch
            return
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else {}
        since = sub.get("since") if isinstance(sub.get("since"), str) else iso(ctx.since)
        start = sub.get("next") if isinstance(sub.get("next"), str) else None
        params = {
            "$expand": "evidence",
            "$filter": f"lastUpdateTime ge {since}",
            "$top": str(self.config.page_size),
        }
        async for rows, nxt in self.api.pages(ALERTS, params, start):
            sightings: list[Sighting] = []
            rejected: list[Rejected] = []
            for alert in rows:
                if dm.raised_by_indicator(alert):
                    continue
                got, bad = dm.alert_to_sightings(alert)
                sightings += got
                rejected += bad
            yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint={"since": since, "next": nxt})

    async def _pull_indicators(self) -> AsyncIterator[Batch]:
        """Every custom indicator others made, as one snapshot (what vanished is withdrawn for this source)."""
        params = {"$top": str(self.config.page_size)}
        async for rows, nxt in self.api.pages(INDICATORS, params):
            sightings: list[Sighting] = []
            rejected: list[Rejected] = []
            for row in rows:
                if isinstance(row, dict) and row.get("application") == dm.MARK:
                    continue  # ctd's own
                try:
                    sightings.append(dm.indicator_to_sighting(row))
                except InvalidIndicator as exc:
                    where = row.get("id") if isinstance(row, dict) else None
                    rejected.append(Rejected(where=f"indicator {where or '?'}", reason=str(exc)))
            yield Batch(sightings=sightings, rejected=rejected, snapshot_end=nxt is None)

    # --- push -----------------------------------------------------------------------------

    async def _existing(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every indicator the app can see, by (type, value)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        async for rows, _ in self.api.pages(INDICATORS, {"$top": str(dm.MAX_TOP)}):
            for row in rows:
                if (k := dm.row_key(row)) is not None:
                    found[k] = row
        return found

    async def push(self, action: str, params: IndicatorParams, items: list[ShareItem]) -> PushResult:
        """Import new indicators and update ctd's own; refuse to touch anyone else's."""
        rejected: dict[str, str] = {}
        wanted: dict[tuple[str, str], ShareItem] = {}
        for it in items:
            if reason := dm.refusal(it, params.action):
                rejected[it.value] = reason
            else:
                wanted.setdefault(dm.key(dm.TO_TYPE[it.type], it.value), it)
        if not wanted:
            return PushResult(rejected=rejected)
        existing = await self._existing()
        bodies: list[dict[str, Any]] = []
        for k, it in wanted.items():
            old = existing.get(k)
            if old is not None and str(old.get("id")) != it.remote_id:
                rejected[it.value] = _taken(old)
                continue
            bodies.append(
                dm.indicator(
                    it,
                    action=params.action,
                    generate_alert=params.generate_alert,
                    severity=params.severity,
                    rbac_groups=params.rbac_groups,
                )
            )
        ids: dict[str, str] = {}
        for start in range(0, len(bodies), dm.MAX_BATCH):
            chunk = bodies[start : start + dm.MAX_BATCH]
            resp = await self.api.request("POST", IMPORT, json={"Indicators": chunk})
            reply = decode(resp, f"Defender POST {IMPORT}")
            rejected |= dm.import_failures(reply, chunk)
            ids |= dm.imported_ids(reply)
        missing = [b["indicatorValue"] for b in bodies if b["indicatorValue"] not in ids | rejected]
        for value in missing:
            rejected[value] = "Defender answered nothing for this indicator (neither an id nor a failure)"
        return PushResult(rejected=rejected, ids=ids)

    async def retract(self, action: str, params: IndicatorParams, items: list[ShareItem]) -> PushResult:
        """BatchDelete the ids ctd recorded; ids already gone count as withdrawn."""
        ids = list(dict.fromkeys(it.remote_id for it in items if it.remote_id))
        for start in range(0, len(ids), dm.MAX_BATCH):
            chunk = ids[start : start + dm.MAX_BATCH]
            resp = await self.api.request("POST", BATCH_DELETE, json={"IndicatorIds": chunk}, accept=(200, 204, 404))
            if resp.status_code == 404:
                # All or nothing: one id deleted meanwhile fails the lot. Delete those still there.
                present = {str(r.get("id")) for r in (await self._existing()).values()}
                rest = [i for i in chunk if i in present]
                if rest:
                    await self.api.request("POST", BATCH_DELETE, json={"IndicatorIds": rest}, accept=(200, 204))
        return PushResult()

    # --- check -------------------------------------------------------------------------------

    async def check(self) -> str:
        """A token, then one page of indicators and (for an alert source) of alerts."""
        await self.api.fetch_token()
        ok: list[str] = []
        denied: list[str] = []
        probes = [("indicators", INDICATORS)]
        if self.config.pull_from == "alerts":
            probes.append(("alerts", ALERTS))
        for what, path in probes:
            try:
                await self.api.request("GET", path, params={"$top": "1"})
                ok.append(f"{what} readable")
            except AuthError as exc:
                denied.append(str(exc))
        if not ok:
            raise AuthError("; ".join(denied))
        msg = f"authenticated for tenant {self.api.tenant.tenant_id} at {self.api.base}: " + ", ".join(ok)
        return msg + ("; refused: " + "; ".join(denied) if denied else "")


def _taken(old: dict[str, Any]) -> str:
    ident, act = old.get("id"), old.get("action")
    if old.get("application") == dm.MARK:
        return (
            f"already a Defender indicator made by ctd for another sharing configuration (id {ident}); "
            "that one updates and withdraws it"
        )
    who = old.get("createdBySource") or old.get("createdBy") or "someone else"
    return f"already a Defender indicator from {who} (id {ident}, action {act!r}); ctd does not overwrite it"
