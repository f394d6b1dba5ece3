"""The ``netskope`` adapter: malware/malsite alerts in, URL lists and file hash lists out.

Tenant settings live once in ``[tenants.NAME]`` and plugins name them
(``tenant = "NAME"``); the ``bind`` hook validates that table with the rest of
the config. Pulling reads the REST API v2 data-export iterator; its index is
the checkpoint, kept by the tenant. Pushing writes a URL list (incremental:
append, replace on retraction; the changes take effect at ``apply``, one
deploy per sharing pass) or a file hash list (v1 ``updateFileHashList``, full
replace).

Like every adapter this one never sleeps or retries on its own: 429 and 5xx
become ``SourceUnavailable`` with the tenant's ``ratelimit-reset`` as the hint,
and the actor waits. The iterator's ``wait_time`` is not waited for either: a
pull ends when the iterator has caught up and ``sync_interval`` schedules the
next one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import Meta

from ctd.adapters.netskope import mapping as nm
from ctd.adapters.netskope.api import NetskopeApi, TenantConfig
from ctd.adapters.tenant import TenantHooks
from ctd.model import (
    ActionSpec,
    Adapter,
    AuthError,
    Batch,
    ConfigError,
    PullContext,
    PushResult,
    ShareItem,
    UpstreamDataError,
)

MAX_ENTRIES = 300_000
MAX_URL_LIST_BYTES = 7 * 1024 * 1024  # 7 MB, as the reference system counts it (7,340,032 B)
MAX_HASH_LIST_BYTES = 8 * 1024 * 1024
URL_LIST_TYPES = ("url", "domain", "hostname", "ipv4", "ipv6")  # the tenant refuses IPv6 itself
HASH_TYPES = ("md5", "sha256")

_Name = Annotated[str, Meta(min_length=1, max_length=255)]


class NetskopeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``netskope`` adapter's own ``[plugins.NAME]`` keys."""

    tenant: _Name  # a [tenants.NAME] table
    alert_types: tuple[Literal["malware", "malsite"], ...] = ("malware", "malsite")
    hash_types: tuple[Literal["md5", "sha256"], ...] = ("md5", "sha256")  # from malware alerts
    iterator_index: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None  # default ctd_<plugin>
    max_pages: Annotated[int, Meta(ge=1, le=100_000)] = 500  # per alert type and pull; the rest comes next pull
    resolved_tenant: TenantConfig | None = None  # filled in by ``bind`` from [tenants.NAME]


class UrlListParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``url_list`` action."""

    list: _Name  # created if missing
    type: Literal["exact", "regex"] = "exact"
    default_url: _Name = "cedefaultpush.io"  # a new or emptied list holds this (the tenant refuses empty lists)
    max_entries: Annotated[int, Meta(ge=1, le=MAX_ENTRIES)] | None = None
    max_bytes: Annotated[int, Meta(ge=1, le=MAX_URL_LIST_BYTES)] | None = None


class HashListParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``file_hash_list`` action (the list must exist in the tenant)."""

    list: _Name
    max_entries: Annotated[int, Meta(ge=1, le=MAX_ENTRIES)] | None = None
    max_bytes: Annotated[int, Meta(ge=1, le=MAX_HASH_LIST_BYTES)] | None = None


class NetskopeAdapter(TenantHooks, Adapter):
    """Pull malware and malsite alerts from a Netskope tenant; write its URL and file hash lists."""

    TENANT = TenantConfig

    Config: ClassVar[type[NetskopeConfig]] = NetskopeConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "url_list": ActionSpec(
            description="append to a URL list (created if missing; replaced on retraction), then deploy",
            mode="incremental",
            needs_apply=True,  # URL list changes are pending in the tenant until deployed
            params=UrlListParams,
            max_entries=MAX_ENTRIES,
            max_bytes=MAX_URL_LIST_BYTES,
            size="json",
            entry_overhead=3,
            batch_size=10_000,
            types=URL_LIST_TYPES,
        ),
        "file_hash_list": ActionSpec(
            description="replace an existing file hash list (REST API v1; needs the tenant's v1_token)",
            mode="full",
            params=HashListParams,
            max_entries=MAX_ENTRIES,
            max_bytes=MAX_HASH_LIST_BYTES,
            size="json",
            entry_overhead=3,
            types=HASH_TYPES,
        ),
    }

    def __init__(self, name: str, config: NetskopeConfig, client: httpx.AsyncClient | None) -> None:
        tenant = config.resolved_tenant
        if tenant is None:
            raise ConfigError(f"tenant {config.tenant!r} was not bound (the config was not loaded with parse_config)")
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = NetskopeApi(self.client, tenant)
        self.index = config.iterator_index or nm.default_index(name)

    # --- config hooks ------------------------------------------------------------

    @classmethod
    def check_plugin(cls, pull: bool, options: NetskopeConfig) -> None:
        super().check_plugin(pull, options)  # resolved_tenant is not the operator's to set
        if pull and not options.alert_types:
            raise ValueError("alert_types is empty: nothing to pull (set pull = false for a destination only)")

    @classmethod
    def target(cls, action: str, params: Any) -> str:
        kind = "urllist" if action == "url_list" else "filehashlist"
        return f"{kind}:{params.list}"

    @classmethod
    def limits(cls, action: str, params: Any) -> tuple[int | None, int | None]:
        return params.max_entries, params.max_bytes

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- pull ----------------------------------------------------------------------

    def _sub(self, kind: str, seek: int | None = None) -> dict:
        return {"index": self.index, "type": kind, "seek": seek}

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Each alert type's iterator until it has caught up; every page is one batch."""
        kinds = list(dict.fromkeys(self.config.alert_types))
        cursor = ctx.cursor if isinstance(ctx.cursor, dict) and ctx.cursor.get("index") == self.index else {}
        started = [k for k in cursor.get("started", []) if k in nm.ALERT_TYPES]
        sub = ctx.sub_checkpoint
        start = 0
        if isinstance(sub, dict) and sub.get("index") == self.index and sub.get("type") in kinds:
            start = kinds.index(sub["type"])
        else:
            sub = None
        for kind in kinds[start:]:
            op = nm.resume_operation(sub, kind, self.index)
            sub = None
            if op is None:
                seek = None if kind in started else ctx.since
                op = "next" if seek is None else str(seek)
                started = [*started, kind] if kind not in started else started
                # Committed before the call that moves the tenant's iterator, so a
                # failure before the page is committed resumes with "resend".
                yield Batch(
                    sightings=[], sub_checkpoint=self._sub(kind, seek), cursor={"index": self.index, "started": started}
                )
            async with aclosing(self._pull_kind(kind, op, ctx.now)) as pages:
                async for batch in pages:
                    yield batch

    async def _pull_kind(self, kind: str, op: str, now: int) -> AsyncGenerator[Batch, None]:
        previous_hwm: int | None = None
        for _page in range(self.config.max_pages):
            body = await self.api.alerts(kind, self.index, op)
            result = body.get("result") or []
            hwm = body.get("timestamp_hwm")
            if result:
                sightings, rejected = nm.alert_sightings(kind, result, self.config.tenant, self.config.hash_types)
                yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint=self._sub(kind))
            if nm.page_ends_pull(result, hwm, previous_hwm, now):
                return
            previous_hwm = nm.epoch_seconds(hwm)
            op = "next"

    # --- push ----------------------------------------------------------------------

    async def push(self, action: str, params: UrlListParams, items: list[ShareItem]) -> PushResult:
        """Append to the URL list (creating it); invalid values come back rejected. Deployed by ``apply``."""
        self._expect(action, "url_list")
        values = list(dict.fromkeys(it.value for it in items))
        if not values:
            return PushResult()
        entry = await self._ensure_list(params)
        rejected, _changed = await self._update(entry["id"], "append", values, params)
        return PushResult(rejected=rejected)

    async def retract(self, action: str, params: UrlListParams, items: list[ShareItem]) -> PushResult:
        """Replace the URL list with its entries minus the withdrawn values. Deployed by ``apply``.

        Values already absent count as withdrawn: after a failed or interrupted deploy
        they are gone from the pending list but may still be enforced, and only the
        deploy (``apply``, which the sharing owes until it succeeds) makes that true.
        """
        self._expect(action, "url_list")
        entry = nm.find_list(await self.api.url_lists(with_data=True), params.list)
        if entry is None:
            return PushResult()  # no list, nothing to withdraw
        current = nm.list_urls(entry)
        withdrawn = {it.value for it in items}
        if withdrawn.isdisjoint(current):
            return PushResult()
        remaining = nm.remaining_urls(current, withdrawn, params.default_url)
        await self._update(entry["id"], "replace", remaining, params)
        return PushResult()  # what the tenant refused were other entries, not the withdrawn ones

    async def apply(self, action: str, params: Any) -> None:
        """Deploy the tenant's pending URL list changes (all lists: the tenant deploys them together)."""
        self._expect(action, "url_list")
        await self.api.deploy()

    async def replace(self, action: str, params: HashListParams, items: list[ShareItem]) -> PushResult:
        """Replace the whole file hash list; the tenant's "no change" reply counts as success."""
        self._expect(action, "file_hash_list")
        values = list(dict.fromkeys(it.value for it in items if it.type in HASH_TYPES))
        body = await self.api.update_hash_list(params.list, nm.hash_list_body(values))
        what = f"update file hash list {params.list!r}"
        if nm.is_auth_error(body):
            raise AuthError(f"{what}: v1 token refused")
        ok, text = nm.hash_list_outcome(body)
        if not ok:
            raise UpstreamDataError(f"{what}: {text}")
        return PushResult()

    @staticmethod
    def _expect(action: str, wanted: str) -> None:
        if action != wanted:
            raise ValueError(f"action {action!r} does not support this operation")

    async def _ensure_list(self, params: UrlListParams) -> dict:
        entry = nm.find_list(await self.api.url_lists(), params.list)
        if entry is not None:
            return entry
        resp = await self.api.create_list(params.list, [params.default_url], params.type)
        body = self.api.decode(resp, f"create URL list {params.list!r}")
        if resp.status_code == 400:
            raise UpstreamDataError(f"create URL list {params.list!r}: {nm.error_text(body, 'refused')}")
        if isinstance(body, dict) and body.get("id") is not None:
            return body
        entry = nm.find_list(await self.api.url_lists(), params.list)
        if entry is None:
            raise UpstreamDataError(f"URL list {params.list!r} was created but is not listed")
        return entry

    async def _update(
        self, ident: Any, how: str, values: list[str], params: UrlListParams
    ) -> tuple[dict[str, str], bool]:
        """Send ``values``; if the tenant names invalid ones, drop them and send the rest once more.

        Returns the rejected values with the tenant's reasons, and whether the list changed.
        """
        resp = await self.api.update_list(ident, how, values, params.type, params.list)
        if resp.status_code != 400:
            return {}, True
        what = f"{how} URL list {params.list!r}"
        body = self.api.decode(resp, what)
        rejected = nm.rejected_values(body, values)
        if not rejected:
            raise UpstreamDataError(f"{what}: {nm.error_text(body, 'refused (HTTP 400)')}")
        rest = [v for v in values if v not in rejected]
        if not rest:
            if how == "append":
                return rejected, False
            rest = [params.default_url]
        resp = await self.api.update_list(ident, how, rest, params.type, params.list)
        if resp.status_code == 400:
            again = self.api.decode(resp, what)
            raise UpstreamDataError(
                f"{what}: refused again after dropping {len(rejected)} invalid values: "
                f"{nm.error_text(again, 'HTTP 400')}"
            )
        return rejected, True

    # --- check -----------------------------------------------------------------------

    async def check(self) -> str:
        """Credentials and reachability: URL lists, and the alert export on a separate index."""
        tenant = self.api.tenant
        ok: list[str] = []
        denied: list[str] = []
        try:
            lists = await self.api.url_lists()
            ok.append(f"{len(lists) if isinstance(lists, list) else 0} URL lists readable")
        except AuthError as exc:
            denied.append(str(exc))
        if self.config.alert_types:
            kind = self.config.alert_types[0]
            try:
                # "tail" on an index of its own: the pull's iterator does not move.
                await self.api.alerts(kind, f"{self.index}_check"[:64], "tail")
                ok.append(f"{kind} alert export readable")
            except AuthError as exc:
                denied.append(str(exc))
        if not ok:
            raise AuthError("; ".join(denied))
        msg = f"reached Netskope tenant {self.config.tenant!r} at {tenant.url}: " + ", ".join(ok)
        if denied:
            msg += "; refused: " + "; ".join(denied)
        msg += "; v1 token set" if tenant.v1_token else "; no v1 token (file_hash_list unavailable)"
        return msg
