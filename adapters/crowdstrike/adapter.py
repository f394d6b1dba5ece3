"""The ``crowdstrike`` adapter: Falcon IOC management as a source and a destination.

Pull reads custom IOCs (``GET /iocs/combined/indicator/v1``) modified since
the last cycle, page by page with the ``after`` cursor, leaving out every IOC
ctd created (FQL on ``source`` and the ``ctd`` tag) so a bidirectional set-up
never reads back what it wrote. Push looks the values up first, creates the
new ones (POST) and updates the ones ctd created before (PATCH); IOCs someone
else created are left alone and reported as rejected. Retraction deletes by
value, restricted to ctd's own IOCs.

Auth is OAuth2 client credentials (``api``): a call answered 401 fetches a new
token and is sent once more; a second 401 disables the plugin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec

from ctd.adapters.crowdstrike import mapping as cmap
from ctd.adapters.crowdstrike.api import COMBINED_PATH, ENTITIES_PATH, FalconApi, base_url, decode, errors_text
from ctd.adapters.http import HttpOptions, make_client
from ctd.model import ActionSpec, Adapter, Batch, PullContext, PushResult, Secret, ShareItem, UpstreamDataError, iso

MAX_FILTER_CHARS = 4000  # keep value:[...] query strings far below common URL limits
BATCH = 200

CsType = cmap.CsType
Cloud = Literal["us-1", "us-2", "eu-1", "us-gov-1"]


class CrowdStrikeConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``crowdstrike`` adapter's own ``[plugins.NAME]`` keys."""

    client_id: str
    client_secret: Secret
    cloud: Cloud = "us-1"
    base_url: str | None = None  # overrides cloud (a proxy, a test emulator)
    types: tuple[CsType, ...] = cmap.CS_TYPES
    source_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "ctd"
    page_size: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 2000  # documented maximum of `limit`

    def __post_init__(self) -> None:
        if self.base_url is not None and not self.base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if not self.types:
            raise ValueError("types must name at least one IOC type")


Platform = Literal["windows", "mac", "linux", "ios", "android"]


class IocParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``ioc`` action."""

    action: Literal["detect", "prevent", "prevent_no_ui", "allow", "no_action"] = "detect"
    platforms: tuple[Platform, ...] = ("windows", "mac", "linux")
    applied_globally: bool = True
    host_groups: tuple[str, ...] = ()  # when not applied globally
    severity: Literal["informational", "low", "medium", "high", "critical"] | None = None  # else from the IoC
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None  # leave room for others' IOCs

    def __post_init__(self) -> None:
        if not self.platforms:
            raise ValueError("platforms must name at least one platform")
        if not self.applied_globally and not self.host_groups:
            raise ValueError("applied_globally = false needs host_groups")


class CrowdStrikeAdapter(Adapter):
    """Pull custom IOCs from CrowdStrike Falcon; create, update and delete them."""

    Config: ClassVar[type[CrowdStrikeConfig]] = CrowdStrikeConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "ioc": ActionSpec(
            description="create/update custom IOCs in Falcon IOC management (sha256, md5, domain, ipv4, ipv6)",
            mode="incremental",
            carries_expiry=True,  # the destination drops an entry at the expiry it was given
            params=IocParams,
            max_entries=1_000_000,  # the tenant-wide IOC cap
            batch_size=BATCH,
        ),
    }

    def __init__(self, name: str, config: CrowdStrikeConfig, client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = FalconApi(self.client, config.client_id, config.client_secret)

    @classmethod
    def make_client(cls, options: CrowdStrikeConfig) -> httpx.AsyncClient:
        return make_client(options, base_url=base_url(options), headers={"Accept": "application/json"})

    @classmethod
    def verifies_tls(cls, options: CrowdStrikeConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    @classmethod
    def target(cls, action: str, params: IocParams) -> None:
        # IOCs are per value, not one list: several sharings may feed one tenant
        # (e.g. hashes -> prevent, domains -> detect); see the docs on overlaps.
        return None

    @classmethod
    def limits(cls, action: str, params: IocParams) -> tuple[int | None, int | None]:
        return params.max_entries, None

    # --- pull ------------------------------------------------------------------------

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """IOCs of the configured types modified since the last cycle, not created by ctd."""
        cfg = self.config
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else {}
        since = sub.get("since") if isinstance(sub.get("since"), str) else iso(ctx.since)
        after = sub.get("after") if isinstance(sub.get("after"), str) else None
        assert since is not None
        query = cmap.pull_filter(cfg.types, since, cfg.source_name)
        what = f"CrowdStrike {COMBINED_PATH}"
        while True:
            params: dict[str, Any] = {"filter": query, "limit": cfg.page_size}
            if after:
                params["after"] = after
            resp = await self.api.request("GET", COMBINED_PATH, what, params=params, accept=(400,) if after else ())
            if resp.status_code == 400:
                # A resume cursor CrowdStrike no longer knows: start the window over
                # (re-reading is harmless, ingest is idempotent).
                after = None
                continue
            body = decode(resp, what)
            resources = body.get("resources") if isinstance(body, dict) else None
            sightings, rejected = cmap.parse_page(resources)
            nxt = cmap.next_after(body) if resources else None
            after = nxt if nxt != after else None  # a cursor that does not advance would loop forever
            yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint={"since": since, "after": after})
            if after is None:
                return

    async def check(self) -> str:
        """Get a token and count the tenant's IOCs (needs IOC Manager read scope)."""
        await self.api.fetch_token()
        what = f"CrowdStrike {COMBINED_PATH}"
        body = decode(await self.api.request("GET", COMBINED_PATH, what, params={"limit": 1}), what)
        try:
            total = body["meta"]["pagination"]["total"]
        except (KeyError, TypeError):
            total = "?"
        return f"authenticated at {base_url(self.config)}; {total} custom IOCs in the tenant"

    # --- push ------------------------------------------------------------------------

    async def _lookup(self, values: list[str]) -> dict[str, dict[str, Any]]:
        """Existing IOCs by value (one query per chunk of values)."""
        found: dict[str, dict[str, Any]] = {}
        what = f"CrowdStrike {COMBINED_PATH} (lookup)"
        for chunk in cmap.value_chunks(values, MAX_FILTER_CHARS, BATCH):
            after: str | None = None
            while True:
                params: dict[str, Any] = {"filter": cmap.fql_list("value", chunk), "limit": 2000}
                if after:
                    params["after"] = after
                body = decode(await self.api.request("GET", COMBINED_PATH, what, params=params), what)
                resources = body.get("resources") if isinstance(body, dict) else None
                for res in resources or ():
                    if isinstance(res, dict) and isinstance(res.get("value"), str):
                        found[res["value"]] = res
                after = cmap.next_after(body) if resources else None
                if after is None:
                    break
        return found

    async def _write(
        self, method: str, indicators: list[dict[str, Any]], values: list[str], ids: dict[str, str] | None = None
    ) -> dict[str, str]:
        what = f"CrowdStrike {method} {ENTITIES_PATH}"
        verb = "created" if method == "POST" else "updated"
        resp = await self.api.request(
            method,
            ENTITIES_PATH,
            what,
            accept=(200, 201, 400),
            json={"indicators": indicators, "comment": cmap.comment(len(indicators), verb)},
        )
        body = decode(resp, what)
        errors = cmap.per_ioc_errors(body, values, ids)
        if resp.status_code == 400 and not errors:
            raise UpstreamDataError(f"{what}: HTTP 400 {errors_text(body)}".rstrip())
        return errors

    async def push(self, action: str, params: IocParams, items: list[ShareItem]) -> PushResult:
        """Create new IOCs, update ctd's existing ones; refuse others' and unsupported ones."""
        rejected: dict[str, str] = {}
        by_value: dict[str, list[ShareItem]] = {}
        for it in items:
            reason = cmap.unsupported_reason(it, params.action)
            if reason:
                rejected[it.value] = reason
            else:
                by_value.setdefault(it.value, []).append(it)
        if not by_value:
            return PushResult(rejected=rejected)
        existing = await self._lookup(list(by_value))
        source = self.config.source_name
        creates: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        ids: dict[str, str] = {}
        for value, its in by_value.items():
            body = cmap.indicator(
                its[0],
                action=params.action,
                platforms=list(params.platforms),
                applied_globally=params.applied_globally,
                severity=params.severity,
                source=source,
            )
            if params.host_groups:
                body["host_groups"] = list(params.host_groups)
            old = existing.get(value)
            if old is None:
                creates.append(body)
            elif old.get("source") != source:
                for it in its:
                    rejected[it.value] = (
                        f"already in CrowdStrike from source {old.get('source')!r} "
                        f"(action {old.get('action')!r}); ctd does not overwrite IOCs it did not create"
                    )
            else:
                del body["type"], body["value"]  # immutable; the id names the IOC
                body["id"] = ids_key = str(old.get("id"))
                ids[ids_key] = value
                updates.append(body)
        errors: dict[str, str] = {}
        if creates:
            errors |= await self._write("POST", creates, [c["value"] for c in creates])
        if updates:
            errors |= await self._write("PATCH", updates, [ids[u["id"]] for u in updates], ids)
        for value, reason in errors.items():
            for it in by_value.get(value, ()):
                rejected[it.value] = reason
        return PushResult(rejected=rejected)

    async def retract(self, action: str, params: IocParams, items: list[ShareItem]) -> PushResult:
        """Delete ctd's IOCs for these values (others' IOCs with the same value stay)."""
        values = list(dict.fromkeys(it.value for it in items if cmap.cs_type(it) is not None))
        what = f"CrowdStrike DELETE {ENTITIES_PATH}"
        source = cmap.fql_quote(self.config.source_name)
        for chunk in cmap.value_chunks(values, MAX_FILTER_CHARS, BATCH):
            await self.api.request(
                "DELETE",
                ENTITIES_PATH,
                what,
                accept=(200, 404),
                params={
                    "filter": f"{cmap.fql_list('value', chunk)}+source:{source}",
                    "comment": cmap.comment(len(chunk), "withdrew"),
                },
            )
        return PushResult()
