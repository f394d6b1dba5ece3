"""The ``taxii`` adapter: STIX 2.1 indicators over TAXII 2.1, pulled and published.

Pull: resolve the API root (from a discovery URL or given directly) and the
collection (by id or title), then ``GET .../objects/`` with ``added_after``,
``limit`` and ``match[type]=indicator``, following ``next`` while ``more``.
A server that says ``more`` without a ``next`` is asked again with
``added_after`` set to the page's ``X-TAXII-Date-Added-Last`` (TAXII 2.1
section 3.4.2). That header, the server's own date, is the checkpoint: object
timestamps say when the producer wrote an object, not when this server added
it, and only the latter orders what a client has already seen.

Push (action ``publish``): each IoC becomes an indicator with a deterministic
id (see ``stix.indicator_id``); a re-share is a new version of the same
object and a retraction publishes a version with ``revoked: true``. Objects
are sent in envelopes within the API root's ``max_content_length`` and the
status resource the server returns is read until it is final.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, ClassVar

import httpx
import msgspec
import trio

from ctd.adapters.http import HttpOptions, make_client, parse_origins, raise_for_status
from ctd.adapters.taxii import mapping as tmap
from ctd.adapters.taxii.api import MEDIA_TYPE as MEDIA_TYPE
from ctd.adapters.taxii.api import Envelope, TaxiiApi, client_settings
from ctd.adapters.taxii.stix import UnsupportedPattern
from ctd.model import (
    ActionSpec,
    Adapter,
    AuthError,
    Batch,
    PullContext,
    PushResult,
    Rejected,
    Secret,
    ShareItem,
    Sighting,
    UpstreamDataError,
    iso,
)

# Sightings and rejections of one page held before they are handed over: a page may be as large as
# max_response_bytes, and a server decides how many objects it holds.
PAGE_BATCH = 5000


class TaxiiConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``taxii`` adapter's own ``[plugins.NAME]`` keys."""

    url: str  # API root, or the server's discovery URL (its default API root is used)
    collection: str = ""  # id or title; required when the plugin pulls
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None  # bearer token, instead of username/password
    page_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000  # the server may cap it lower
    # Other origins (https://host[:port]) the discovery document may place the API
    # root on; they receive the credentials. By default only the url's own origin.
    allow_api_roots_at: list[str] = []

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        parse_origins(self.allow_api_roots_at, "allow_api_roots_at")
        if self.token and (self.username or self.password):
            raise ValueError("give either token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")


class PublishParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``publish`` action."""

    collection: str  # id or title of a writable collection


class TaxiiAdapter(Adapter):
    """Pull STIX 2.1 indicators from a TAXII 2.1 collection; publish IoCs into one."""

    Config: ClassVar[type[TaxiiConfig]] = TaxiiConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "publish": ActionSpec(
            description="publish IoCs as STIX 2.1 indicators (retraction: a revoked version)",
            mode="incremental",
            params=PublishParams,
            batch_size=500,
        ),
    }

    def __init__(self, name: str, config: TaxiiConfig, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = TaxiiApi(self.client, config.url, config.allow_api_roots_at, config.max_response_bytes)
        self._last_ms = 0

    @classmethod
    def check_plugin(cls, pull: bool, config: TaxiiConfig) -> None:
        if pull and not config.collection:
            raise ValueError("a pulling taxii plugin needs `collection`")

    @classmethod
    def make_client(cls, config: TaxiiConfig) -> httpx.AsyncClient:
        headers, auth = client_settings(config)
        return make_client(config, headers=headers, auth=auth)

    @classmethod
    def verifies_tls(cls, options: TaxiiConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    @classmethod
    def target(cls, action: str, params: PublishParams) -> str:
        return params.collection

    @classmethod
    def limits(cls, action: str, params: PublishParams) -> tuple[int | None, int | None]:
        return None, None  # envelopes are split to the server's max_content_length instead

    # --- pull ---------------------------------------------------------------------

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Indicators added to the collection since the last server date seen."""
        coll = await self.api.collection(self.config.collection)
        if not coll.can_read:
            raise AuthError(f"TAXII collection {coll.title or coll.id!r} is not readable with these credentials")
        url = await self.api.objects_url(coll)
        start = None
        for state in (ctx.sub_checkpoint, ctx.cursor):
            if isinstance(state, dict) and isinstance(state.get("added_after"), str):
                start = state["added_after"]
                break
        added_after = start or iso(ctx.since)
        last = start  # the newest server date seen (None until the server sends one)
        next_token: str | None = None
        while True:
            # medallion insists on the same filters (and a limit) with every `next`.
            params = {"added_after": added_after, "match[type]": "indicator", "limit": self.config.page_size}
            if next_token is not None:
                params["next"] = next_token
            async with self.api.get_objects(url, params) as resp:
                if next_token is not None and resp.status_code in (400, 404) and last and last != added_after:
                    # The server dropped the pagination session: ask again from the last date we hold.
                    added_after, next_token = last, None
                    continue
                self.api.forget_on_404(resp)
                raise_for_status(resp, "TAXII get objects")
                ctx.progress.pages_read += 1  # TAXII gives no total
                page_last = resp.headers.get("X-TAXII-Date-Added-Last")
                envelope = Envelope(resp, self.config.max_response_bytes)
                sightings: list[Sighting] = []
                rejected: list[Rejected] = []
                n = 0
                async for objects in envelope.objects():
                    # Parsing patterns (ANTLR) costs ~0.3 ms each: off the event loop.
                    s, r = await trio.to_thread.run_sync(tmap.map_objects, objects, ctx.now, n)
                    n += len(objects)
                    sightings += s
                    rejected += r
                    if len(sightings) + len(rejected) >= PAGE_BATCH:
                        # A page this large is handed over in parts; resuming refetches the page.
                        resume = {"added_after": last or added_after}
                        yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint=resume)
                        sightings, rejected = [], []
                ctx.progress.bytes_read += envelope.bytes_read
            if page_last:
                last = page_last
            yield Batch(
                sightings=sightings,
                rejected=rejected,
                sub_checkpoint={"added_after": last or added_after},
                cursor={"added_after": last} if last else None,
            )
            if not envelope.more:
                return
            if envelope.next is not None:
                next_token = envelope.next
                continue
            if not page_last or page_last == added_after:
                raise UpstreamDataError("TAXII get objects: 'more' without 'next' or a newer X-TAXII-Date-Added-Last")
            added_after, next_token = page_last, None

    async def check(self) -> str:
        """Resolve the API root and the collection; report its permissions."""
        key = self.config.collection
        root = await self.api.api_root()
        if not key:
            return f"API root {root} reachable (max_content_length {self.api.max_content})"
        coll = await self.api.collection(key)
        rights = "/".join(r for r, ok in (("read", coll.can_read), ("write", coll.can_write)) if ok) or "no access"
        return f"collection {coll.title!r} ({coll.id}) at {root}: {rights}"

    # --- push ---------------------------------------------------------------------

    async def push(self, action: str, params: PublishParams, items: list[ShareItem]) -> PushResult:
        """Publish a new version of each IoC's indicator."""
        return await self._publish(params, items, revoked=False)

    async def retract(self, action: str, params: PublishParams, items: list[ShareItem]) -> PushResult:
        """Publish a revoked version of each IoC's indicator."""
        return await self._publish(params, items, revoked=True)

    def _modified_ms(self) -> int:
        # A version must be newer than the last one we sent, even within one millisecond.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    async def _publish(self, params: PublishParams, items: list[ShareItem], revoked: bool) -> PushResult:
        coll = await self.api.collection(params.collection)
        if not coll.can_write:
            raise AuthError(f"TAXII collection {coll.title or coll.id!r} is not writable with these credentials")
        rejected: dict[str, str] = {}
        values_by_id: dict[str, list[str]] = {}
        encoded: list[tuple[str, bytes]] = []
        modified = self._modified_ms()
        for item in items:
            try:
                obj = tmap.to_indicator(item, modified_ms=modified, revoked=revoked)
            except UnsupportedPattern as exc:
                rejected[item.value] = str(exc)
                continue
            if obj["id"] in values_by_id:  # e.g. the same name as domain and hostname: one object
                values_by_id[obj["id"]].append(item.value)
                continue
            values_by_id[obj["id"]] = [item.value]
            encoded.append((obj["id"], tmap.encode(obj)))
        batches, too_big = tmap.envelopes(encoded, self.api.max_content)
        for oid in too_big:
            for v in values_by_id[oid]:
                rejected[v] = f"larger than the server's max_content_length ({self.api.max_content} bytes)"
        url = await self.api.objects_url(coll)
        for _, body in batches:
            status = await self.api.add_objects(url, body)
            for oid, reason in tmap.status_failures(status).items():
                for v in values_by_id.get(oid, ()):
                    rejected[v] = reason
        return PushResult(rejected=rejected)
