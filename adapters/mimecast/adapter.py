"""The ``mimecast`` adapter: detections in, Managed URLs and blocked sender policies out.

The account's API 2.0 application lives once in ``[tenants.NAME]`` and plugins
name it (``tenant = "NAME"``). Pulling reads URL Protect click logs and
Attachment Protect logs (malicious verdicts only) and, where licensed, the
threat-intel feed, each over the window since the last cycle, page by page.
Pushing creates Managed URLs (action ``managed_url``) or blocked sender
policies (``blocked_sender``); withdrawing deletes exactly the entries ctd
created, by the ids the ledger recorded. An entry someone else made for the
same URL is reported, never overwritten or deleted.

Like every adapter this one never sleeps or retries: 429 and 5xx become
``SourceUnavailable`` (a 429 waits ``X-RateLimit-Reset`` milliseconds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import Meta

from ctd.adapters.mimecast import api as mapi
from ctd.adapters.mimecast import mapping as m
from ctd.adapters.mimecast.api import MimecastApi, MimecastTenant
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
    host_of_url,
)

_Name = Annotated[str, Meta(min_length=1, max_length=255)]
BATCH = 100  # data items per call (Mimecast publishes no maximum; the reference plugin sends small batches)
MAX_PAGES = 10_000  # per stream and pull: page tokens that never end are a broken or hostile server
LOG_PATHS = {"url": mapi.URL_LOGS, "attachment": mapi.ATTACHMENT_LOGS}


class MimecastConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``mimecast`` adapter's own ``[plugins.NAME]`` keys."""

    tenant: _Name  # a [tenants.NAME] table
    logs: tuple[Literal["url", "attachment"], ...] = ("url", "attachment")
    feed_types: tuple[Literal["malware_customer", "malware_grid"], ...] = ()  # the threat-intel feed, if licensed
    route: Literal["all", "inbound", "outbound", "internal"] = "all"
    page_size: Annotated[int, Meta(ge=1, le=500)] = 100
    resolved_tenant: MimecastTenant | None = None  # filled in by ``bind`` from [tenants.NAME]


class ManagedUrlParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``managed_url`` action."""

    action: Literal["block", "permit"] = "block"
    match_type: Literal["explicit", "domain"] | None = None  # None: URLs explicit, domains and hostnames domain
    disable_rewrite: bool = False
    disable_user_awareness: bool = False
    disable_log_click: bool = False
    max_entries: Annotated[int, Meta(ge=1)] | None = None


class BlockedSenderParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``blocked_sender`` action."""

    from_part: Literal["envelope_from", "header_from", "both"] = "envelope_from"
    max_entries: Annotated[int, Meta(ge=1)] | None = None


class MimecastAdapter(TenantHooks, Adapter):
    """Pull Mimecast detections and the threat-intel feed; write Managed URLs and blocked sender policies."""

    TENANT = MimecastTenant

    Config: ClassVar[type[MimecastConfig]] = MimecastConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "managed_url": ActionSpec(
            description="create Managed URLs (URL Protect; block or permit), deleted by id on withdrawal",
            mode="incremental",
            params=ManagedUrlParams,
            batch_size=BATCH,
            types=m.URL_TYPES,
        ),
        "blocked_sender": ActionSpec(
            description="create blocked sender policies (a sender address or domain), deleted by id on withdrawal",
            mode="incremental",
            params=BlockedSenderParams,
            batch_size=BATCH,
            types=m.POLICY_TYPES,
        ),
    }

    def __init__(self, name: str, config: MimecastConfig, client: httpx.AsyncClient | None = None) -> None:
        tenant = config.resolved_tenant
        if tenant is None:
            raise ConfigError(f"tenant {config.tenant!r} was not bound (the config was not loaded with parse_config)")
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = MimecastApi(self.client, tenant)

    # --- config hooks ------------------------------------------------------------------

    @classmethod
    def check_plugin(cls, pull: bool, options: MimecastConfig) -> None:
        super().check_plugin(pull, options)  # resolved_tenant is not the operator's to set
        if pull and not (options.logs or options.feed_types):
            raise ValueError("logs and feed_types are empty: nothing to pull (set pull = false for a destination)")

    @classmethod
    def limits(cls, action: str, params: Any) -> tuple[int | None, int | None]:
        return params.max_entries, None

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- pull ---------------------------------------------------------------------------

    def _streams(self) -> list[str]:
        logs = [f"logs:{k}" for k in dict.fromkeys(self.config.logs)]
        return logs + [f"feed:{k}" for k in dict.fromkeys(self.config.feed_types)]

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Each stream over the window [since, now], page by page; the sub-checkpoint keeps stream, window, token."""
        streams = self._streams()
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else {}
        if sub.get("stream") in streams and isinstance(sub.get("from"), int) and isinstance(sub.get("to"), int):
            start, lo, hi = streams.index(sub["stream"]), sub["from"], sub["to"]
            token = sub.get("token") if isinstance(sub.get("token"), str) else None
        else:
            start, lo, hi, token = 0, ctx.since, ctx.now, None
        for i, stream in enumerate(streams[start:], start):
            after = streams[i + 1] if i + 1 < len(streams) else None
            kind, _, name = stream.partition(":")
            pages = self._log_pages(name, lo, hi, token) if kind == "logs" else self._feed_pages(name, lo, hi, token)
            async for sightings, rejected, nxt in pages:
                here = {"stream": stream, "from": lo, "to": hi, "token": nxt}
                done = {"stream": after, "from": lo, "to": hi, "token": None} if after else None
                yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint=here if nxt else done)
            token = None

    async def _log_pages(self, name: str, lo: int, hi: int, token: str | None) -> AsyncIterator[tuple]:
        query = {"from": m.stamp(lo), "to": m.stamp(hi), "route": self.config.route, "oldestFirst": True}
        query["scanResult" if name == "url" else "result"] = "malicious"
        own: tuple[set[str], set[str]] = (set(), set())
        if name == "url":
            # A click on a URL ctd itself blocks is that block working, not a new detection.
            try:
                own = m.own_blocks(await self.api.call(mapi.LIST_URLS, []))
            except AuthError:
                pass  # an application allowed to read logs only: nothing of ctd's to leave out
        for _ in range(MAX_PAGES):
            pagination: dict[str, Any] = {"pageSize": self.config.page_size}
            if token:
                pagination["pageToken"] = token
            body = await self.api.call(LOG_PATHS[name], [query], meta={"pagination": pagination})
            if name == "url":
                sightings, rejected = m.parse_click_logs(body)
                sightings = [s for s in sightings if s.value not in own[0] and host_of_url(s.value) not in own[1]]
            else:
                sightings, rejected = m.parse_attachment_logs(body)
            nxt = m.next_page_token(body)
            nxt = nxt if nxt != token else None  # a token that does not move would loop forever
            yield sightings, rejected, nxt
            if nxt is None:
                return
            token = nxt
        raise UpstreamDataError(f"Mimecast {LOG_PATHS[name]}: more than {MAX_PAGES} pages in one pull")

    async def _feed_pages(self, name: str, lo: int, hi: int, token: str | None) -> AsyncIterator[tuple]:
        for _ in range(MAX_PAGES):
            query: dict[str, Any] = {"start": m.stamp(lo), "end": m.stamp(hi), "feedType": name, "fileType": "csv"}
            if token:
                query["token"] = token
            text, nxt = await self.api.feed(query)
            sightings, rejected = m.parse_feed(text)
            nxt = nxt if nxt != token else None
            yield sightings, rejected, nxt
            if nxt is None:
                return
            token = nxt
        raise UpstreamDataError(f"Mimecast {mapi.FEED}: more than {MAX_PAGES} parts in one pull")

    # --- push -----------------------------------------------------------------------------

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        if action == "managed_url":
            return await self._push_urls(params, items)
        if action == "blocked_sender":
            return await self._push_senders(params, items)
        raise ValueError(f"unknown action {action!r}")

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        """Delete the entries ctd created (by recorded id); one already gone counts as withdrawn."""
        path = {"managed_url": mapi.DELETE_URL, "blocked_sender": mapi.DELETE_POLICY}.get(action)
        if path is None:
            raise ValueError(f"unknown action {action!r}")
        # Without a recorded id ctd created nothing there: nothing to delete.
        sent = [(it.value, {"id": it.remote_id}) for it in items if it.remote_id]
        if not sent:
            return PushResult()
        reply = await self.api.call(path, [body for _, body in sent])
        fails = m.fail_reasons(reply, sent)
        return PushResult(rejected={v: r for v, r in fails.items() if "not found" not in r.lower()})

    async def _push_urls(self, params: ManagedUrlParams, items: list[ShareItem]) -> PushResult:
        """Create Managed URLs; keep ctd's own ones, refuse to touch anyone else's."""
        rejected: dict[str, str] = {}
        ids: dict[str, str] = {}
        wanted: dict[tuple[str, str], tuple[ShareItem, dict[str, Any]]] = {}
        for it in items:
            if reason := m.managed_url_refusal(it):
                rejected[it.value] = reason
                continue
            body = m.managed_url(
                it, action=params.action, match_type=params.match_type, disable_log_click=params.disable_log_click
            )
            body["disableRewrite"] = params.disable_rewrite
            body["disableUserAwareness"] = params.disable_user_awareness
            wanted.setdefault((body["url"], body["matchType"]), (it, body))
        if not wanted:
            return PushResult(rejected=rejected)
        existing = m.managed_entries(await self.api.call(mapi.LIST_URLS, []))
        creates: list[tuple[str, dict[str, Any]]] = []
        for key, (it, body) in wanted.items():
            old = existing.get(key)
            if old is None:
                creates.append((it.value, body))
            elif it.remote_id == old["id"]:
                ids[it.value] = old["id"]  # ctd's own entry is there already (no update call exists)
            else:
                rejected[it.value] = _taken("Managed URL", old, f"action {old.get('action')!r}")
        if creates:
            reply = await self.api.call(mapi.CREATE_URL, [body for _, body in creates])
            rejected |= m.fail_reasons(reply, creates)
            ids |= m.created_ids(reply, creates, m.spelled)
            rejected |= _without_id(creates, rejected, ids)
        return PushResult(rejected=rejected, ids=ids)

    async def _push_senders(self, params: BlockedSenderParams, items: list[ShareItem]) -> PushResult:
        """Create a blocked sender policy per value, unless ctd's own policy for it still exists."""
        rejected: dict[str, str] = {}
        ids: dict[str, str] = {}
        existing = {
            p["id"]
            for p in (await self.api.call(mapi.LIST_POLICIES, [])).get("data") or ()
            if isinstance(p, dict) and isinstance(p.get("id"), str)
        }
        creates: list[tuple[str, dict[str, Any]]] = []
        for it in {it.value: it for it in items}.values():
            if reason := m.sender_policy_refusal(it):
                rejected[it.value] = reason
            elif it.remote_id in existing:
                ids[it.value] = it.remote_id  # type: ignore[assignment]  # in existing: a str
            else:
                creates.append((it.value, m.blocked_sender_policy(it, from_part=params.from_part)))
        if creates:
            reply = await self.api.call(mapi.CREATE_POLICY, [body for _, body in creates])
            rejected |= m.fail_reasons(reply, creates)
            ids |= m.created_ids(reply, creates, m.policy_sender)
            rejected |= _without_id(creates, rejected, ids)
        return PushResult(rejected=rejected, ids=ids)

    # --- check -------------------------------------------------------------------------------

    async def check(self) -> str:
        """A token, then the Managed URL list and (for a pulling plugin) one page of click logs."""
        await self.api.fetch_token()
        ok: list[str] = []
        denied: list[str] = []
        try:
            body = await self.api.call(mapi.LIST_URLS, [])
            ok.append(f"{len(body.get('data') or [])} Managed URLs readable")
        except AuthError as exc:
            denied.append(str(exc))
        if self.config.logs:
            try:
                query = {"scanResult": "malicious", "route": "all"}
                await self.api.call(mapi.URL_LOGS, [query], meta={"pagination": {"pageSize": 1}})
                ok.append("URL Protect logs readable")
            except AuthError as exc:
                denied.append(str(exc))
        if not ok:
            raise AuthError("; ".join(denied))
        msg = f"authenticated at {self.api.base} (tenant {self.config.tenant!r}): " + ", ".join(ok)
        return msg + ("; refused: " + "; ".join(denied) if denied else "")


def _taken(what: str, old: dict[str, Any], detail: str) -> str:
    if m.is_ctd(old.get("comment")):
        return (
            f"already a {what} made by ctd for another sharing configuration (id {old['id']}); "
            "that one keeps and withdraws it"
        )
    return f"already a {what} in Mimecast (id {old['id']}, {detail}) not created by ctd; ctd leaves it alone"


def _without_id(
    sent: list[tuple[str, dict[str, Any]]], rejected: dict[str, str], ids: dict[str, str]
) -> dict[str, str]:
    """Accepted values Mimecast named no id for: ctd could never withdraw them, so they count as refused."""
    reason = "Mimecast accepted it but named no id: ctd cannot withdraw it later (check the console)"
    return {v: reason for v, _ in sent if v not in rejected and v not in ids}
