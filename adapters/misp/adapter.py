"""The ``misp`` adapter: pull attributes from a MISP instance, push to a MISP event.

Pull pages through ``POST /attributes/restSearch`` over the window
``attribute_timestamp = [since, now]``; the page is the sub-checkpoint, so an
interrupted pull resumes at the same page of the same window (and then also
covers the time between that window and this run). Push adds attributes to a
named event (created when missing) tagged with the export tag, which the pull
always excludes, so a bidirectional setup never reads its own exports back.
Retraction soft-deletes those attributes with ``/attributes/deleteSelected``.

The HTTP calls are in ``api``, the mapping (and the one MISP type table) in ``mapping``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import Meta

from ctd.adapters.http import HttpOptions, make_client
from ctd.adapters.misp import mapping as m
from ctd.adapters.misp.api import MispApi
from ctd.model import (
    ActionSpec,
    Adapter,
    Batch,
    PullContext,
    PushResult,
    Secret,
    ShareItem,
    SourceUnavailable,
)

ADD_BATCH = 2500  # attributes per /attributes/add call (what the reference system sends)


class MispConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``misp`` adapter's own ``[plugins.NAME]`` keys."""

    url: str
    api_key: Secret
    types: tuple[str, ...] = m.PULL_TYPES
    categories: tuple[str, ...] = ()
    # MISP tag filter; "!tag" excludes. Not ``tags``: that is the common plugin key (tags added to every IoC).
    filter_tags: tuple[str, ...] = ()
    to_ids: bool = True  # only attributes flagged for IDS
    published: bool | None = None  # None: events published or not
    enforce_warninglist: bool = True
    include_decay_score: bool = False
    exclude_decayed: bool = False
    decaying_model: tuple[int, ...] = ()
    score_threshold: Annotated[float, Meta(ge=0, le=100)] | None = None
    page_size: Annotated[int, Meta(ge=1, le=50_000)] = 1000
    export_tag: str = "ctd"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        unknown = sorted(set(self.types) - set(m.PULL_TYPES))
        if unknown:
            raise ValueError(f"unsupported MISP types {unknown} (supported: {', '.join(m.PULL_TYPES)})")
        if not self.types:
            raise ValueError("types must not be empty")
        tag = self.export_tag
        if not tag or tag != tag.strip() or '"' in tag or tag.startswith("!") or len(tag) > 64:
            raise ValueError("export_tag must be 1-64 characters, no quotes, no leading '!' or blanks")


class EventParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``event`` action."""

    event_name: Annotated[str, Meta(min_length=1, max_length=65_535)]
    distribution: Literal[0, 1, 2, 3] = 0  # your org only, community, connected, all
    threat_level_id: Literal[1, 2, 3, 4] = 4  # high, medium, low, undefined
    analysis: Literal[0, 1, 2] = 0  # initial, ongoing, completed
    publish: bool = False  # publish the event after each change


class MispAdapter(Adapter):
    """Pull MISP attributes; add/delete attributes of a MISP event."""

    Config: ClassVar[type[MispConfig]] = MispConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "event": ActionSpec(
            description="add attributes to a MISP event (created if missing); retraction deletes them",
            mode="incremental",
            params=EventParams,
            batch_size=ADD_BATCH,
            types=tuple(m.PUSH_TYPES),
        ),
    }

    def __init__(self, name: str, config: MispConfig, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.api = MispApi(self.client, config.url, config.api_key)
        self.base = self.api.base
        self._events: dict[str, str] = {}  # event name -> id, found or created

    @classmethod
    def make_client(cls, options: MispConfig) -> httpx.AsyncClient:
        return make_client(options)

    @classmethod
    def verifies_tls(cls, options: MispConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    @classmethod
    def target(cls, action: str, params: EventParams) -> str:
        return params.event_name

    @classmethod
    def limits(cls, action: str, params: EventParams) -> tuple[int | None, int | None]:
        return None, None

    # --- pull ---------------------------------------------------------------------

    async def _page(self, start: int, end: int, page: int) -> list[dict[str, Any]]:
        body = m.restsearch_body(self.config, page=page, start=start, end=end)
        return await self.api.search_attributes(body, f"MISP attributes/restSearch page {page}", missing_ok=False)

    @staticmethod
    def _windows(ctx: PullContext) -> list[tuple[int, int, int]]:
        """(from, to, first page) windows: a resumed one, then what has happened since it."""
        sub = ctx.sub_checkpoint
        if isinstance(sub, dict) and all(type(sub.get(k)) is int for k in ("page", "from", "to")) and sub["page"] >= 1:
            windows = [(sub["from"], sub["to"], sub["page"])]
            if sub["to"] < ctx.now:
                windows.append((sub["to"], ctx.now, 1))
            return windows
        return [(ctx.since, ctx.now, 1)]

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """One batch per restSearch page; an empty or short page ends a window."""
        cfg = self.config
        windows = self._windows(ctx)
        for i, (start, end, page) in enumerate(windows):
            while True:
                attrs = await self._page(start, end, page)
                ctx.progress.pages_read += 1  # restSearch gives no total
                sightings, rejected = [], []
                for attr in attrs:
                    got, bad = m.map_attribute(
                        attr,
                        base_url=self.base,
                        export_tag=cfg.export_tag,
                        to_ids_only=cfg.to_ids,
                    )
                    sightings.extend(got)
                    rejected.extend(bad)
                last = len(attrs) < cfg.page_size
                if last and i + 1 < len(windows):
                    nstart, nend, _ = windows[i + 1]
                    resume = {"page": 1, "from": nstart, "to": nend}
                else:
                    resume = {"page": page + 1, "from": start, "to": end}
                if attrs:
                    yield Batch(sightings=sightings, rejected=rejected, sub_checkpoint=resume)
                if last:
                    break
                page += 1

    async def check(self) -> str:
        """``GET /servers/getVersion``: the key works and the instance answers."""
        return f"MISP {await self.api.version()} at {self.base}"

    # --- push ---------------------------------------------------------------------

    async def _event_id(self, params: EventParams, *, create: bool) -> str | None:
        name = params.event_name
        if name in self._events:
            return self._events[name]
        ids = await self.api.find_events(name)
        if ids:
            self._events[name] = ids[0]
            return ids[0]
        if not create:
            return None
        event = {
            "info": name,
            "distribution": params.distribution,
            "threat_level_id": params.threat_level_id,
            "analysis": params.analysis,
            "published": False,
        }
        self._events[name] = await self.api.add_event(event)
        return self._events[name]

    def _forget(self, params: EventParams) -> SourceUnavailable:
        self._events.pop(params.event_name, None)
        return SourceUnavailable(f"MISP event {params.event_name!r} is gone; it is looked up again on retry")

    async def push(self, action: str, params: EventParams, items: list[ShareItem]) -> PushResult:
        """Add attributes in batches; MISP's refusals (except duplicates) are rejections."""
        tag = self.config.export_tag
        rejected: dict[str, str] = {}
        todo = []
        for it in items:
            if it.type in m.PUSH_TYPES:
                todo.append(it)
            else:
                rejected[it.value] = f"type {it.type} is not exported to MISP"
        if not todo:
            return PushResult(rejected=rejected)
        event_id = await self._event_id(params, create=True)
        added = 0
        for i in range(0, len(todo), ADD_BATCH):
            chunk = todo[i : i + ADD_BATCH]
            sent = [m.to_attribute(it, tag) for it in chunk]
            failures = await self.api.add_attributes(str(event_id), sent)
            if failures is None:
                raise self._forget(params)
            for idx, reason in failures.items():
                if not m.is_duplicate(reason):
                    rejected[chunk[idx].value] = reason
            added += len(chunk)
        if params.publish and added > len(rejected):
            await self.api.publish(str(event_id))
        return PushResult(rejected=rejected)

    async def _find(self, event_id: str, values: list[str]) -> dict[str, str]:
        """Our (export-tagged, not deleted) attributes in the event holding these values: id -> value."""
        found: dict[str, str] = {}
        page = 1
        size = self.config.page_size
        while True:
            body = {
                "returnFormat": "json",
                "eventid": event_id,
                "value": values,
                "tags": [self.config.export_tag],
                "limit": size,
                "page": page,
            }
            what = f"MISP attributes/restSearch event {event_id} page {page}"
            attrs = await self.api.search_attributes(body, what, missing_ok=True)
            wanted = set(values)
            for a in attrs:
                if a.get("value") in wanted and str(a.get("event_id")) == str(event_id) and not a.get("deleted"):
                    found[str(a["id"])] = a["value"]
            if len(attrs) < size:
                return found
            page += 1

    async def retract(self, action: str, params: EventParams, items: list[ShareItem]) -> PushResult:
        """Soft-delete the event's attributes holding these values (absent ones count as done)."""
        event_id = await self._event_id(params, create=False)
        if event_id is None:
            return PushResult()
        values = [it.value for it in items]
        ids = await self._find(event_id, values)
        if not ids:
            return PushResult()
        code, data = await self.api.delete_attributes(event_id, list(ids))
        rejected: dict[str, str] = {}
        if code == 403:  # some could not be deleted: MISP does not say which
            reason = m.reason_of(data.get("errors"))
            left = await self._find(event_id, values)
            rejected = {v: reason for v in left.values()}
        elif code == 404 and not (isinstance(data, dict) and "No matching" in str(data.get("message", ""))):
            raise self._forget(params)
        if params.publish and len(rejected) < len(ids):
            await self.api.publish(event_id)
        return PushResult(rejected=rejected)
