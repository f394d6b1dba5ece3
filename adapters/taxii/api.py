"""A TAXII 2.1 server as the ``taxii`` adapter calls it: API root, collections, objects, status.

The API root is resolved once (from a discovery URL or given directly) and
pinned to the configured origin: credentials only go to another origin the
plugin lists in ``allow_api_roots_at``. A 404 on a collection forgets what was
resolved, so the next call looks it up again.

Pages of objects are read as they download (``Envelope``): the objects come
out one at a time through the adapters' incremental JSON parser, each at most
1 MiB, the page at most ``max_response_bytes`` on the wire and decompressed, so
a page (or a gzip bomb posing as one) never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import msgspec
import structlog
import trio

from ctd.adapters.http import (
    DEFAULT_MAX_RESPONSE,
    decoded_body,
    map_http_errors,
    origin_of,
    origin_text,
    parse_origins,
    raise_for_status,
)
from ctd.adapters.jsonstream import JsonError, JsonStream
from ctd.model import UpstreamDataError

log = structlog.get_logger("ctd.taxii")

MEDIA_TYPE = "application/taxii+json;version=2.1"
# A server that answers "pending" finishes adding objects in the background;
# TAXII 2.1 (4.3) has the client poll the status resource. Bounded so a stuck
# server cannot hold a sharing pass: the actor's deadline wraps the whole call.
STATUS_POLLS = 10
STATUS_POLL_INTERVAL = 0.5
DEFAULT_MAX_CONTENT = 10 * 1024 * 1024  # if the API root does not say


class Collection(msgspec.Struct, frozen=True):
    id: str
    title: str
    can_read: bool
    can_write: bool


def segment(server_id: str) -> str:
    """A server-given id as one quoted path segment, so no id leaves the API root."""
    return quote(server_id, safe="")


def client_settings(config: Any) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Default headers and Basic credentials of a plugin's HTTP client."""
    headers = {"Accept": MEDIA_TYPE}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    auth = (config.username, config.password or "") if config.username is not None else None
    return headers, auth


def decode(resp: httpx.Response, what: str) -> dict:
    """A reply's JSON object (UpstreamDataError otherwise)."""
    try:
        body = msgspec.json.decode(resp.content) if resp.content else {}
    except msgspec.DecodeError as exc:
        raise UpstreamDataError(f"{what}: response is not JSON") from exc
    except RecursionError:
        raise UpstreamDataError(f"{what}: response is nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise UpstreamDataError(f"{what}: response is not a JSON object")
    return body


class Envelope:
    """A page of objects (a TAXII envelope) parsed as it downloads: ``objects``, then ``more`` and ``next``."""

    def __init__(self, resp: httpx.Response, limit: int) -> None:
        self.resp = resp
        self.limit = limit
        self.bytes_read = 0  # decoded bytes so far, for the pull's progress
        self.stream = JsonStream(("objects",), name="TAXII envelope", optional=True, fields=("more", "next"))

    async def objects(self) -> AsyncIterator[list[Any]]:
        """The objects as they are parsed, a chunk's worth at a time (raises UpstreamDataError)."""
        with map_http_errors("TAXII get objects"):
            async for chunk in decoded_body(self.resp, self.limit):
                self.bytes_read += len(chunk)
                if items := await trio.to_thread.run_sync(self._feed, chunk):
                    yield items
        if items := self._feed(None):
            yield items

    def _feed(self, chunk: bytes | None) -> list[Any]:
        try:
            return self.stream.feed(chunk) if chunk is not None else self.stream.finish()
        except JsonError as exc:
            raise UpstreamDataError(f"TAXII get objects: {exc}") from None
        except RecursionError:
            raise UpstreamDataError("TAXII get objects: response is nested too deeply to parse") from None

    @property
    def more(self) -> bool:
        return self.stream.fields.get("more") is True

    @property
    def next(self) -> str | None:
        nxt = self.stream.fields.get("next")
        return nxt if isinstance(nxt, str) and nxt else None


class TaxiiApi:
    """One plugin's server: its API root and collections, resolved once, and the calls on them."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        allow_api_roots_at: list[str],
        max_response_bytes: int = DEFAULT_MAX_RESPONSE,
    ) -> None:
        self.client = client
        self.url = url
        self.allow_api_roots_at = allow_api_roots_at
        self.max_response_bytes = max_response_bytes
        self.max_content = DEFAULT_MAX_CONTENT
        self._root: str | None = None
        self._collections: dict[str, Collection] = {}

    async def get(self, url: str, what: str, params: dict[str, Any] | None = None) -> httpx.Response:
        with map_http_errors(what):
            resp = await self.client.get(url, params=params)
        raise_for_status(resp, what)
        return resp

    async def api_root(self) -> str:
        """The API root URL (with a trailing slash), found once."""
        if self._root is not None:
            return self._root
        url = self.url if self.url.endswith("/") else self.url + "/"
        info = decode(await self.get(url, "TAXII discovery"), "TAXII discovery")
        if "api_roots" in info:  # a discovery resource: use its default API root
            roots = [r for r in info.get("api_roots") or () if isinstance(r, str)]
            chosen = info.get("default") if isinstance(info.get("default"), str) else (roots[0] if roots else None)
            if not chosen:
                raise UpstreamDataError(f"TAXII discovery at {url} lists no API root")
            url = urljoin(url, chosen)
            url = url if url.endswith("/") else url + "/"
            self._pin(url)
            info = decode(await self.get(url, "TAXII API root"), "TAXII API root")
        size = info.get("max_content_length")
        if type(size) is int and size > 0:
            self.max_content = size
        self._root = url
        return url

    def _pin(self, root: str) -> None:
        """Refuse an API root off the configured origin (it would get the credentials) unless listed."""
        here = origin_of(self.url)
        try:
            there = origin_of(root)
        except httpx.InvalidURL:
            raise UpstreamDataError(
                f"TAXII discovery at {origin_text(self.url)} names an invalid API root URL"
            ) from None
        if there != here and there not in parse_origins(self.allow_api_roots_at):
            raise UpstreamDataError(
                f"TAXII discovery at {origin_text(self.url)} points the API root to another origin "
                f"{origin_text(root)}; credentials are only sent there if allow_api_roots_at lists it"
            )

    async def collection(self, key: str) -> Collection:
        """The collection with this id, else with this title."""
        if key in self._collections:
            return self._collections[key]
        root = await self.api_root()
        body = decode(await self.get(root + "collections/", "TAXII collections"), "TAXII collections")
        found: list[Collection] = []
        for c in body.get("collections") or ():
            if not isinstance(c, dict) or not isinstance(c.get("id"), str):
                continue
            coll = Collection(c["id"], str(c.get("title", "")), c.get("can_read") is True, c.get("can_write") is True)
            if coll.id == key:
                found = [coll]
                break
            if coll.title == key:
                found.append(coll)
        if len(found) != 1:
            problem = "no collection" if not found else f"{len(found)} collections"
            raise UpstreamDataError(f"{problem} with id or title {key!r} at {root}")
        self._collections[key] = found[0]
        return found[0]

    async def objects_url(self, coll: Collection) -> str:
        return f"{await self.api_root()}collections/{segment(coll.id)}/objects/"

    def forget_on_404(self, resp: httpx.Response) -> None:
        # The collection (or API root) moved or went away: resolve it again next time.
        if resp.status_code == 404:
            self._root = None
            self._collections.clear()

    @asynccontextmanager
    async def get_objects(self, url: str, params: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """One ``GET .../objects/`` page, its body unread and its status unchecked: the caller decides what a
        400/404 means, and reads the objects with ``Envelope``."""
        with map_http_errors("TAXII get objects"):
            async with self.client.stream("GET", url, params=params) as resp:
                yield resp

    async def add_objects(self, url: str, body: bytes) -> dict:
        """``POST .../objects/`` one envelope; the final status resource."""
        what = "TAXII add objects"
        with map_http_errors(what):
            resp = await self.client.post(url, content=body, headers={"Content-Type": MEDIA_TYPE})
        self.forget_on_404(resp)
        if resp.status_code == 413:
            raise UpstreamDataError(f"{what}: HTTP 413, the server refused an envelope within its max_content_length")
        raise_for_status(resp, what)
        return await self._until_final(decode(resp, what))

    async def _until_final(self, status: dict) -> dict:
        root = await self.api_root()
        sid = status.get("id")
        polls = 0
        while status.get("status") == "pending" and isinstance(sid, str) and polls < STATUS_POLLS:
            await trio.sleep(STATUS_POLL_INTERVAL)
            polls += 1
            what = "TAXII get status"
            status = decode(await self.get(f"{root}status/{segment(sid)}/", what), what)
        if status.get("status") == "pending":
            # Accepted for processing; a later failure would go unseen, so say so.
            log.warning(
                "TAXII status still pending",
                ctd_event="taxii_status_pending",
                status_id=sid,
                pending=status.get("pending_count"),
            )
        return status
