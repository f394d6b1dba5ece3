"""The ``sentinelone`` adapter: threats' hashes (or others' IOCs) in, Threat Intelligence IOCs out.

The console and its API token live once in ``[tenants.NAME]``; each plugin
names one account or site scope (``account_id`` or ``site_id``). Pulling reads
threats updated since the last cycle (their file hashes; an analyst's false
positive verdict withdraws them), or the IOCs others put in the scope
(``pull_from = "iocs"``), never ctd's own. Pushing creates IOCs (action
``ioc``); withdrawing deletes by a filter on the values in the scope *and* the
uuids ctd recorded, so an IOC someone else made for the same value stays.

One invalid IOC makes SentinelOne refuse the whole request (400 naming
``data.<i>.<field>``): those items are reported with the console's reason and
the rest is sent once more. 429 and 5xx are ``SourceUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import Meta

from ctd.adapters.sentinelone import mapping as sm
from ctd.adapters.sentinelone.api import SentinelOneApi, SentinelOneTenant, decode, errors_text
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
    UpstreamDataError,
    iso,
    now,
)

_Name = Annotated[str, Meta(min_length=1, max_length=255)]
_Id = Annotated[str, Meta(pattern=r"^[0-9]{1,32}$")]
BATCH = 500  # IOCs per request (not published; the reference plugin sends up to 2,500)
MAX_QUERY_CHARS = 4000  # keep value__in query strings far below common URL limits
MAX_IOCS = 1_000_000  # per scope


class SentinelOneConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``sentinelone`` adapter's own ``[plugins.NAME]`` keys."""

    tenant: _Name  # a [tenants.NAME] table
    account_id: _Id | None = None
    site_id: _Id | None = None
    pull_from: Literal["threats", "iocs"] = "threats"
    page_size: Annotated[int, Meta(ge=1, le=sm.MAX_LIMIT)] = sm.MAX_LIMIT
    source_name: Annotated[str, Meta(min_length=1, max_length=200)] = "ctd"
    resolved_tenant: SentinelOneTenant | None = None  # filled in by ``bind`` from [tenants.NAME]


class IocParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``ioc`` action."""

    max_entries: Annotated[int, Meta(ge=1, le=MAX_IOCS)] | None = None


class SentinelOneAdapter(TenantHooks, Adapter):
    """Pull threats or others' IOCs from a SentinelOne scope; create and delete Threat Intelligence IOCs."""

    TENANT = SentinelOneTenant

    Config: ClassVar[type[SentinelOneConfig]] = SentinelOneConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "ioc": ActionSpec(
            description="create Threat Intelligence IOCs in the scope; deleted by value and recorded uuid",
            mode="incremental",
            carries_expiry=True,  # the destination drops an entry at the expiry it was given
            params=IocParams,
            max_entries=MAX_IOCS,
            batch_size=BATCH,
            types=tuple(sm.TO_TYPE),
        ),
    }

    def __init__(self, name: str, config: SentinelOneConfig, client: httpx.AsyncClient | None = None) -> None:
        tenant = config.resolved_tenant
        if tenant is None:
            raise ConfigError(f"tenant {config.tenant!r} was not bound (the config was not loaded with parse_config)")
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = SentinelOneApi(self.client, tenant)
        self.scope = sm.scope_filter(account_id=config.account_id, site_id=config.site_id)
        self.scope_query = {k: ",".join(v) for k, v in self.scope.items()}

    # --- config hooks ------------------------------------------------------------------

    @classmethod
    def check_plugin(cls, pull: bool, options: SentinelOneConfig) -> None:
        super().check_plugin(pull, options)  # resolved_tenant is not the operator's to set
        if (options.account_id is None) == (options.site_id is None):
            raise ValueError("give exactly one of account_id or site_id (the scope ctd reads and writes)")

    @classmethod
    def limits(cls, action: str, params: IocParams) -> tuple[int | None, int | None]:
        return params.max_entries, None

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- pull ---------------------------------------------------------------------------

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Threats (or IOCs) updated since the last cycle, page by page; the sub-checkpoint keeps the cursor."""
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else {}
        since = sub.get("since") if isinstance(sub.get("since"), str) else iso(ctx.since)
        cursor = sub.get("cursor") if isinstance(sub.get("cursor"), str) else None
        threats = self.config.pull_from == "threats"
        path = sm.THREATS if threats else sm.IOCS
        params = {**self.scope_query, "updatedAt__gte": since, "limit": self.config.page_size}
        async for rows, nxt in self.api.pages(path, params, cursor):
            sightings, rejected = self._threats(rows) if threats else self._iocs(rows)
            yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint={"since": since, "cursor": nxt})

    def _threats(self, rows: list[Any]) -> tuple[list[Sighting], list[Rejected]]:
        sightings: list[Sighting] = []
        rejected: list[Rejected] = []
        for threat in rows:
            got, bad = sm.threat_to_sightings(threat, self.api.base)
            sightings += got
            rejected += bad
        return sightings, rejected

    def _iocs(self, rows: list[Any]) -> tuple[list[Sighting], list[Rejected]]:
        sightings: list[Sighting] = []
        rejected: list[Rejected] = []
        for row in rows:
            if isinstance(row, dict) and row.get("source") == self.config.source_name:
                continue  # ctd's own
            try:
                sightings.append(sm.ioc_to_sighting(row))
            except InvalidIndicator as exc:
                where = row.get("uuid") if isinstance(row, dict) else None
                rejected.append(Rejected(where=f"IOC {where or '?'}", reason=str(exc)))
        return sightings, rejected

    # --- push -----------------------------------------------------------------------------

    async def _existing(self, values: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
        """The scope's IOCs for these values, by (type, value)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        plain = [v for v in dict.fromkeys(values) if "," not in v]
        queries = [{"value": v} for v in dict.fromkeys(values) if "," in v]
        chunk: list[str] = []
        for v in plain:
            if chunk and sum(len(c) + 1 for c in chunk) + len(v) > MAX_QUERY_CHARS:
                queries.append({"value__in": ",".join(chunk)})
                chunk = []
            chunk.append(v)
        if chunk:
            queries.append({"value__in": ",".join(chunk)})
        for q in queries:
            for row in await self.api.iocs({**self.scope_query, **q, "limit": sm.MAX_LIMIT}):
                if isinstance(row.get("type"), str) and isinstance(row.get("value"), str):
                    found[sm.key(row["type"], row["value"])] = row
        return found

    async def push(self, action: str, params: IocParams, items: list[ShareItem]) -> PushResult:
        """Create IOCs (ctd's own are updated in place); refuse to touch anyone else's."""
        rejected: dict[str, str] = {}
        wanted: dict[tuple[str, str], ShareItem] = {}
        for it in items:
            if reason := sm.refusal(it):
                rejected[it.value] = reason
            else:
                wanted.setdefault(sm.key(sm.TO_TYPE[it.type], it.value), it)
        if not wanted:
            return PushResult(rejected=rejected)
        existing = await self._existing([it.value for it in wanted.values()])
        at = now()
        sent: list[dict[str, Any]] = []
        for k, it in wanted.items():
            old = existing.get(k)
            if old is not None and old.get("uuid") != it.remote_id:
                rejected[it.value] = _taken(old, self.config.source_name)
            else:
                sent.append(sm.ioc(it, now=at, source=self.config.source_name))
        ids: dict[str, str] = {}
        if sent:
            created, refused = await self._create(sent)
            rejected |= refused
            for body in sent:
                uuid = created.get(sm.key(body["type"], body["value"]))
                if uuid:
                    ids[body["value"]] = uuid
                elif body["value"] not in rejected:
                    rejected[body["value"]] = "SentinelOne answered no uuid for this IOC"
        # validUntil is the item's expiry capped by the console (or its default): the ledger re-pushes in time.
        expires: dict[str, int | None] = {it.value: sm.valid_until(it, at) for it in wanted.values()}
        return PushResult(rejected=rejected, ids=ids, expires=expires)

    async def _create(self, sent: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
        """POST the IOCs; if some are invalid (the whole request is refused), send the rest once more."""
        what = f"SentinelOne POST {sm.IOCS}"
        resp = await self.api.request("POST", sm.IOCS, json=sm.create_body(sent, self.scope))
        body = decode(resp, what)
        if resp.status_code != 400:
            return sm.created_ids(body), {}
        refused = sm.validation_failures(body, sent)
        if not refused:
            raise UpstreamDataError(f"{what}: HTTP 400 {errors_text(body)}".rstrip())
        rest = [s for s in sent if s["value"] not in refused]
        if not rest:
            return {}, refused
        resp = await self.api.request("POST", sm.IOCS, json=sm.create_body(rest, self.scope))
        again = decode(resp, what)
        if resp.status_code == 400:
            raise UpstreamDataError(
                f"{what}: refused again after dropping {len(refused)} invalid IOCs: {errors_text(again)}"
            )
        return sm.created_ids(again), refused

    async def retract(self, action: str, params: IocParams, items: list[ShareItem]) -> PushResult:
        """Delete by value in the scope, restricted to the uuids ctd recorded; values already gone are done."""
        mine = [(it.value, it.remote_id) for it in items if it.remote_id]
        for start in range(0, len(mine), BATCH):
            chunk = mine[start : start + BATCH]
            body = sm.delete_body([v for v, _ in chunk], self.scope, uuids=[u for _, u in chunk if u])
            resp = await self.api.request("DELETE", sm.IOCS, json=body)
            if resp.status_code == 400:
                what = f"SentinelOne DELETE {sm.IOCS}"
                raise UpstreamDataError(f"{what}: HTTP 400 {errors_text(decode(resp, what))}".rstrip())
        return PushResult()

    # --- check -------------------------------------------------------------------------------

    async def check(self) -> str:
        """The token's access to the scope's IOCs and (for a threat source) its threats."""
        ok: list[str] = []
        probes = [("IOCs", sm.IOCS)] + ([("threats", sm.THREATS)] if self.config.pull_from == "threats" else [])
        denied: list[str] = []
        for what, path in probes:
            try:
                resp = await self.api.request("GET", path, params={**self.scope_query, "limit": 1}, accept=())
                body = decode(resp, what)
                page = body.get("pagination") if isinstance(body, dict) else None
                total = page.get("totalItems", "?") if isinstance(page, dict) else "?"
                ok.append(f"{total} {what}")
            except AuthError as exc:
                denied.append(str(exc))
        if not ok:
            raise AuthError("; ".join(denied))
        scope = f"account {self.config.account_id}" if self.config.account_id else f"site {self.config.site_id}"
        msg = f"reached SentinelOne at {self.api.base}, {scope}: " + ", ".join(ok)
        return msg + ("; refused: " + "; ".join(denied) if denied else "")


def _taken(old: dict[str, Any], source: str) -> str:
    if old.get("source") == source:
        return (
            f"already a SentinelOne IOC made by ctd for another sharing configuration (uuid {old.get('uuid')}); "
            "that one updates and withdraws it"
        )
    return f"already a SentinelOne IOC from source {old.get('source')!r} in this scope; ctd does not overwrite it"
