"""The feed adapter's HTTP calls: a conditional GET, and the body read as it streams within its caps.

``FeedHttp.open`` yields None for ``304 Not Modified``, else a ``Body``: the
decoded chunks (``Content-Encoding`` gzip/deflate, and a gzip file inside),
with ``max_bytes`` enforced on the wire and after decompression, and the
validators (ETag, Last-Modified) the next conditional GET sends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, cast

import httpx

from ctd.adapters.feed import formats as ff
from ctd.adapters.http import map_http_errors, raise_for_status
from ctd.model import PullContext, PullProgress, UpstreamDataError


def _content_length(headers: httpx.Headers) -> int | None:
    """The announced body size (on the wire), for progress only: never trusted as a limit."""
    try:
        n = int(headers.get("content-length", ""))
    except ValueError:
        return None
    return n if n > 0 else None


class Body:
    """A 200 response being read: decoded chunks, size limits, validators."""

    def __init__(self, resp: httpx.Response, max_bytes: int, what: str) -> None:
        self.resp = resp
        self.max_bytes = max_bytes
        self.what = what
        h = resp.headers
        self.validators = {k: v for k, v in (("etag", h.get("etag")), ("last_modified", h.get("last-modified"))) if v}
        self.validator = self.validators.get("etag") or self.validators.get("last_modified") or ""
        self.size = 0
        self.progress: PullProgress | None = None  # a pull's, when one reads this body: bytes on the wire
        self.total = _content_length(h)

    def _error(self, msg: str) -> UpstreamDataError:
        return UpstreamDataError(f"{self.what}: {msg}")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The decoded body; raises UpstreamDataError when too large, truncated or undecodable."""
        enc = self.resp.headers.get("content-encoding", "identity").strip().lower()
        if enc in ("gzip", "x-gzip"):
            outer: ff.Inflate | None = ff.Inflate(31, "gzip")
        elif enc == "deflate":
            outer = ff.Inflate(15, "deflate")
        elif enc in ("identity", ""):
            outer = None
        else:
            raise self._error(f"unsupported Content-Encoding {enc!r}")
        inner: ff.Inflate | None = None
        head = b""  # until we know whether the (decoded) body is itself a gzip file
        sniffed = False
        wire = 0
        try:
            # httpx declares an AsyncIterator; it is an async generator, which aclosing needs.
            raws_gen = cast(AsyncGenerator[bytes, None], self.resp.aiter_raw())
            async with aclosing(raws_gen) as raws:
                async for raw in raws:
                    wire += len(raw)
                    if self.progress is not None:
                        self.progress.bytes_read += len(raw)
                    if wire > self.max_bytes:
                        raise self._error(f"response is larger than max_bytes ({self.max_bytes})")
                    for piece in outer.feed(raw) if outer else (raw,):
                        if not sniffed:
                            head += piece
                            if len(head) < 2:
                                continue
                            sniffed, piece, head = True, head, b""
                            if piece.startswith(b"\x1f\x8b"):
                                inner = ff.Inflate(31, "gzip file")
                        for out in inner.feed(piece) if inner else (piece,):
                            self.size += len(out)
                            if self.size > self.max_bytes:
                                raise self._error(f"decoded body is larger than max_bytes ({self.max_bytes})")
                            yield out
            if outer:
                outer.finish()
            if head:  # a one-byte body
                self.size += len(head)
                yield head
            if inner:
                inner.finish()
        except ff.FormatError as exc:
            raise self._error(str(exc)) from None

    async def read(self) -> bytes:
        buf = bytearray()
        async with aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                buf += chunk
        return bytes(buf)


class FeedHttp:
    """GETs of one feed plugin: its headers and secret, its conditional requests, its size cap."""

    def __init__(self, client: httpx.AsyncClient, config: Any) -> None:
        self.client = client
        self.config = config

    def request_headers(self, cursor: dict | None = None) -> dict[str, str]:
        """Extra headers, the Auth-Key secret, and the conditional headers from ``cursor``."""
        h = {"Accept-Encoding": "gzip, deflate", **self.config.headers}
        if self.config.auth_key:
            h["Auth-Key"] = self.config.auth_key
        if cursor:
            if isinstance(etag := cursor.get("etag"), str):
                h["If-None-Match"] = etag
            if isinstance(lm := cursor.get("last_modified"), str):
                h["If-Modified-Since"] = lm
        return h

    def conditional(self, ctx: PullContext, resuming: bool) -> dict | None:
        """The cursor to send validators from, or None for an unconditional GET.

        A resumed pull must see the body again; and after ``refetch_after``
        without a full download the body is fetched anyway, so an unchanged
        feed keeps refreshing last_seen and does not age out.
        """
        cur = ctx.cursor
        if resuming or not isinstance(cur, dict):
            return None
        fetched = cur.get("fetched_at")
        if not isinstance(fetched, int) or ctx.now - fetched >= self.config.refetch_after:
            return None
        return cur

    @asynccontextmanager
    async def open(self, url: str, cursor: dict | None, what: str) -> AsyncIterator[Body | None]:
        """GET ``url``; yields None for 304 Not Modified, else the Body (raises ctd errors)."""
        with map_http_errors(what):
            async with self.client.stream("GET", url, headers=self.request_headers(cursor)) as resp:
                if resp.status_code == 304:
                    yield None
                    return
                raise_for_status(resp, what)
                if resp.status_code != 200:
                    raise UpstreamDataError(f"{what}: unexpected HTTP {resp.status_code}")
                yield Body(resp, self.config.max_bytes, what)
