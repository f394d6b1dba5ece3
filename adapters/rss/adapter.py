"""The ``rss`` adapter: indicators from the entries of an RSS or Atom feed (and, optionally, their articles).

Each pull is a conditional GET of the feed (``If-None-Match`` /
``If-Modified-Since`` from the validators in the cursor); ``304`` ends the
pull with nothing to report. The body (capped at ``max_bytes``) is parsed by
feedparser in a child process (``parse``); each entry not seen before (by its
guid, else link, else title, with its update time) is read: title, summary
and content as text, and with ``fetch_articles`` the linked article (HTML
main text, PDF or text; capped at ``article_max_bytes`` and
``article_timeout``). The indicators found (``ctd.adapters.web.extract``)
carry the article's URL as ``reference``, the entry's title as ``comments``
and the feed's and the entry's categories as tags.

The cursor remembers the entries done that are still in the feed (so it is
bounded by ``max_entries``) and the feed's validators. It is committed with
every batch; the validators only with the last one, and only when no entry is
left to retry, so an interrupted or partly failed pull fetches the feed again.
An article that fails for a transient reason (network, 5xx, 429) leaves its
entry to be retried at the next pulls (``article_retries`` times in all);
other failures are reported as rejected records and the entry is done.

Security: the feed's own headers (``headers``, which may carry a token) are
sent to articles on the feed's origin only; articles elsewhere are fetched
only from ``article_origins`` (``["*"]``: any http(s) origin, for aggregator
feeds; this lets the feed's author make ctd send GETs to any host it can
reach). Redirects follow the HTTP layer's policy (same origin, or
``allow_redirects_to``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from ctd.adapters.http import make_client, origin_of, origin_text, parse_origins
from ctd.adapters.rss.entries import Entry, Feed, read_feed
from ctd.adapters.rss.parse import FeedError, parse_feed
from ctd.adapters.web.fetch import conditional_headers, document_text, fetch
from ctd.adapters.web.options import ExtractOptions, extract_in_thread
from ctd.model import (
    Adapter,
    AuthError,
    Batch,
    Duration,
    PullContext,
    Rejected,
    Secret,
    Sighting,
    SourceUnavailable,
    UpstreamDataError,
    describe,
)

BATCH_ENTRIES = 20  # entries per batch: each batch commits the cursor, so an interrupted pull resumes


class RssConfig(ExtractOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``rss`` adapter's ``[plugins.NAME]`` keys."""

    url: str = ""
    headers: dict[str, Secret] = {}  # values are secrets: never shown, sent to this origin only
    allow_redirects_to: list[str] = []
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 << 20)] = 8 << 20
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    parse_time_budget: Duration = Duration(30)
    fetch_articles: bool = False
    article_origins: list[str] = []
    article_max_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 << 20)] = 4 << 20
    article_timeout: Duration = Duration(30)
    article_retries: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3

    def __post_init__(self) -> None:
        parse_origins(self.allow_redirects_to)
        parse_origins([o for o in self.article_origins if o != "*"], "article_origins")


def _what(url: str) -> str:
    """The URL for messages: scheme, host and the last path segment (never a query: it may hold a key)."""
    u = urlsplit(url)
    return f"{origin_text(url)}/{u.path.rstrip('/').rpartition('/')[2]}"


class RssAdapter(Adapter):
    """Pull indicators from an RSS/Atom feed's entries and, optionally, the articles they link to."""

    Config: ClassVar[type[RssConfig]] = RssConfig
    can_pull: ClassVar[bool] = True
    default_warninglists: ClassVar = "default"  # values taken from prose: guarded unless the config says otherwise

    def __init__(self, name: str, config: RssConfig, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.what = f"feed {_what(config.url)}" if config.url else "feed"
        self.article_origins = parse_origins(o for o in config.article_origins if o != "*")
        self.any_origin = "*" in config.article_origins

    @classmethod
    def check_plugin(cls, pull: bool, config: RssConfig) -> None:
        if pull and not config.url:
            raise ValueError("a pulling rss plugin needs `url`")
        if config.url and urlsplit(config.url).scheme not in ("http", "https"):
            raise ValueError("url must be an http:// or https:// URL")

    @classmethod
    def make_client(cls, config: RssConfig) -> httpx.AsyncClient:
        return make_client(config, allow_redirects_to=config.allow_redirects_to, redirect_option="allow_redirects_to")

    @classmethod
    def verifies_tls(cls, options: RssConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _feed(self, cursor: dict | None) -> tuple[Feed, dict[str, str]] | None:
        """The feed (None on 304) and its validators."""
        cfg = self.config
        got = await fetch(
            self.client,
            cfg.url,
            headers={**cfg.headers, **conditional_headers(cursor)},
            max_bytes=cfg.max_bytes,
            what=self.what,
        )
        if got is None:
            return None
        try:
            raw = await parse_feed(got.data, max_entries=cfg.max_entries, time_budget=float(cfg.parse_time_budget))
        except FeedError as exc:
            raise UpstreamDataError(f"{self.what}: {exc}") from None
        feed = await trio.to_thread.run_sync(read_feed, raw, cfg.url)
        return feed, got.validators

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        cur = ctx.cursor if isinstance(ctx.cursor, dict) else {}
        seen = {k for k in cur.get("seen") or [] if isinstance(k, str)}
        tries = {k: n for k, n in (cur.get("retry") or {}).items() if isinstance(n, int)}
        first_pull = not cur
        got = await self._feed(None if cur.get("incomplete") else cur)
        if got is None:
            return  # 304: no new entries
        feed, validators = got
        done: list[str] = [e.key for e in feed.entries if e.key in seen]
        retry: dict[str, int] = {}
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        todo = [e for e in feed.entries if e.key not in seen]
        for n, entry in enumerate(todo, 1):
            if first_pull and entry.published is not None and entry.published < ctx.since:
                done.append(entry.key)  # older than initial_range on the first pull: never read
                continue
            sightings, bad, again = await self._entry(entry, feed, ctx.now)
            out += sightings
            rejected += bad
            if again and tries.get(entry.key, 0) + 1 < self.config.article_retries:
                retry[entry.key] = tries.get(entry.key, 0) + 1
            else:
                done.append(entry.key)
            if n % BATCH_ENTRIES == 0 and n < len(todo):
                # No validators yet: a pull interrupted after this batch must GET the feed again.
                yield Batch(sightings=_dedup(out), rejected=rejected, cursor={"seen": list(done), "incomplete": True})
                out, rejected = [], []
        cursor: dict[str, Any] = {"seen": done}
        if retry:
            cursor.update(retry=retry, incomplete=True)
        else:
            cursor.update(validators)
        yield Batch(sightings=_dedup(out), rejected=rejected, cursor=cursor)

    async def _entry(self, entry: Entry, feed: Feed, now: int) -> tuple[list[Sighting], list[Rejected], bool]:
        """One entry's sightings, what was rejected, and whether to retry it (its article failed for now)."""
        texts = [entry.text]
        rejected: list[Rejected] = []
        again = False
        if self.config.fetch_articles and entry.link:
            where = f"article {_what(entry.link)}"
            try:
                texts.append(await self._article(entry.link, where))
            except SourceUnavailable as exc:
                again = True
                rejected.append(Rejected(where=where, reason=describe(exc)))
            except (UpstreamDataError, AuthError, trio.TooSlowError) as exc:
                reason = "took longer than article_timeout" if isinstance(exc, trio.TooSlowError) else describe(exc)
                rejected.append(Rejected(where=where, reason=reason))
        found = await extract_in_thread("\n\n".join(texts), self.config, self.config.excluded(feed.link, entry.link))
        first = min(entry.published, now) if entry.published is not None else None
        tags = tuple(dict.fromkeys(feed.tags + entry.tags))
        sightings = [
            Sighting(type=t, value=v, first_seen=first, tags=tags, comments=entry.title, reference=entry.link)
            for t, v in found.values
        ]
        return sightings, rejected, again

    async def _article(self, link: str, where: str) -> str:
        """The linked article's text; raises the ctd error that says what to do next."""
        cfg = self.config
        there = origin_of(link)
        same = there == origin_of(cfg.url)
        if not (same or self.any_origin or there in self.article_origins):
            raise UpstreamDataError(f"{where}: on another origin than the feed; list it in article_origins")
        with trio.fail_after(float(cfg.article_timeout)):
            got = await fetch(
                self.client,
                link,
                headers=dict(cfg.headers) if same else {},  # the feed's headers (a token?) stay on its origin
                max_bytes=cfg.article_max_bytes,
                what=where,
            )
            assert got is not None  # not a conditional request
            doc = await document_text(
                got,
                main=True,
                what=where,
                time_budget=float(cfg.extract_time_budget),
                pdf_max_pages=cfg.pdf_max_pages,
            )
        return doc.text

    async def check(self) -> str:
        """GET and parse the feed; report how many entries it has."""
        got = await self._feed(None)
        assert got is not None
        feed, validators = got
        more = "+" if feed.more else ""
        return f"HTTP 200, {len(feed.entries)}{more} entries" + (", has ETag" if "etag" in validators else "")


def _dedup(sightings: list[Sighting]) -> list[Sighting]:
    """One sighting per value in a batch: the first entry's (feeds list the newest first)."""
    seen: dict[tuple[str, str], Sighting] = {}
    for s in sightings:
        seen.setdefault((s.type, s.value), s)
    return list(seen.values())
