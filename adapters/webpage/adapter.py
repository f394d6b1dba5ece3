"""The ``webpage`` adapter: indicators from one or more web pages (advisories, paste-style pages, PDFs).

Each pull GETs every page in ``urls`` (in order), reads its text by what it is
(HTML: the main content, or all visible text with ``main_text = false``; PDF;
plain text) and extracts indicators (``ctd.adapters.web.extract``). Each
indicator carries the page's URL as ``reference`` and its ``<title>`` as
``comments``.

Without ``snapshot`` each page is fetched with a conditional GET (validators
per page in the cursor; ``refetch_after`` forces a full GET now and then so
what a page still lists keeps being seen and does not age out); a ``304``
page reports nothing. With ``snapshot = true`` every page is fetched in full
every time and the pull is a snapshot of the source: a value that is on none
of the pages any more is retracted for this source. Only a pull where every
page was read completely (no failure, no cap hit) ends a snapshot; otherwise
nothing is retracted.

A page that fails does not stop the others: their values are reported, and
the pull then fails with that page's error (so the source shows it and backs
off).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import httpx
import msgspec

from ctd.adapters.http import make_client, origin_text, parse_origins
from ctd.adapters.web.fetch import conditional_headers, document_text, fetch
from ctd.adapters.web.options import ExtractOptions, extract_in_thread, one_line, reference_of
from ctd.model import Adapter, AdapterError, Batch, Duration, PullContext, Secret, Sighting

MAX_URLS = 100


class WebpageConfig(ExtractOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``webpage`` adapter's ``[plugins.NAME]`` keys."""

    urls: Annotated[list[str], msgspec.Meta(max_length=MAX_URLS)] = []
    headers: dict[str, Secret] = {}  # values are secrets: never shown, sent to this origin only
    allow_redirects_to: list[str] = []
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 << 20)] = 4 << 20
    snapshot: bool = False
    main_text: bool = True
    refetch_after: Duration = Duration(86400)

    def __post_init__(self) -> None:
        parse_origins(self.allow_redirects_to)


def _what(url: str) -> str:
    u = urlsplit(url)
    return f"page {origin_text(url)}/{u.path.rstrip('/').rpartition('/')[2]}"


class WebpageAdapter(Adapter):
    """Pull indicators from web pages on every sync_interval."""

    Config: ClassVar[type[WebpageConfig]] = WebpageConfig
    can_pull: ClassVar[bool] = True
    default_warninglists: ClassVar = "default"  # values taken from prose: guarded unless the config says otherwise

    def __init__(self, name: str, config: WebpageConfig, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)

    @classmethod
    def check_plugin(cls, pull: bool, config: WebpageConfig) -> None:
        if pull and not config.urls:
            raise ValueError("a pulling webpage plugin needs `urls`")
        for url in config.urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"urls: {url[:80]!r} is not an http:// or https:// URL")
        if len(set(config.urls)) != len(config.urls):
            raise ValueError("urls: a page is listed twice")

    @classmethod
    def make_client(cls, config: WebpageConfig) -> httpx.AsyncClient:
        return make_client(config, allow_redirects_to=config.allow_redirects_to, redirect_option="allow_redirects_to")

    @classmethod
    def verifies_tls(cls, options: WebpageConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    def _conditional(self, ctx: PullContext, url: str) -> dict[str, str]:
        """Validators for a conditional GET of ``url``, unless it must be read in full this time."""
        if self.config.snapshot or not isinstance(ctx.cursor, dict):
            return {}
        page = (ctx.cursor.get("pages") or {}).get(url)
        if not isinstance(page, dict):
            return {}
        fetched = page.get("fetched_at")
        if not isinstance(fetched, int) or ctx.now - fetched >= self.config.refetch_after:
            return {}
        return conditional_headers(page)

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        cfg = self.config
        old = ctx.cursor.get("pages") if isinstance(ctx.cursor, dict) else None
        pages: dict[str, Any] = {u: p for u, p in (old or {}).items() if u in cfg.urls and isinstance(p, dict)}
        failure: AdapterError | None = None
        complete = True
        for i, url in enumerate(cfg.urls):
            last = i == len(cfg.urls) - 1
            try:
                sightings, validators, whole = await self._page(ctx, url)
            except AdapterError as exc:
                failure = failure or exc
                complete = False
                pages.pop(url, None)  # read it in full next time
                sightings = []
            else:
                complete = complete and whole
                if validators is not None:
                    pages[url] = {**validators, "fetched_at": ctx.now}
            yield Batch(
                sightings=sightings,
                cursor={"pages": dict(pages)},
                snapshot_end=last and cfg.snapshot and complete,
            )
        if failure is not None:
            raise failure

    async def _page(self, ctx: PullContext, url: str) -> tuple[list[Sighting], dict[str, str] | None, bool]:
        """One page's sightings, its validators (None: 304) and whether it was read completely."""
        cfg = self.config
        what = _what(url)
        got = await fetch(
            self.client, url, headers={**cfg.headers, **self._conditional(ctx, url)}, max_bytes=cfg.max_bytes, what=what
        )
        if got is None:
            return [], None, True
        doc = await document_text(
            got,
            main=cfg.main_text,
            what=what,
            time_budget=float(cfg.extract_time_budget),
            pdf_max_pages=cfg.pdf_max_pages,
        )
        found = await extract_in_thread(doc.text, cfg, cfg.excluded(url))
        title = one_line(doc.title, 300)
        ref = reference_of(url)
        sightings = [Sighting(type=t, value=v, comments=title, reference=ref) for t, v in found.values]
        return sightings, got.validators, doc.complete and found.complete

    async def check(self) -> str:
        """GET each page and say what it is (no extraction)."""
        kinds = []
        for url in self.config.urls:
            got = await fetch(
                self.client, url, headers=dict(self.config.headers), max_bytes=self.config.max_bytes, what=_what(url)
            )
            assert got is not None
            kinds.append(got.content_type or "?")
        return f"{len(kinds)} pages: " + ", ".join(kinds)
