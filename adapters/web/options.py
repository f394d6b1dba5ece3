"""The extraction keys both web adapters share, and running the extractor with them.

``types``: the indicator types to keep; ``defanged_only``: keep only what the
author defanged (the stand-in for a minimum confidence: neither ioc-finder nor
iocsearcher scores one, and a defanged value is one the author marked as an
indicator on purpose); ``exclude_domains``: values on these domains and their
subdomains are dropped; ``exclude_publisher``: also the publisher's own domain
(the page's, or the feed's and the article's host, without ``www.``), so its
own links, addresses and CDN are not indicators.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Literal, cast
from urllib.parse import urlsplit

import msgspec
import trio

from ctd.adapters.http import HttpOptions
from ctd.model import Duration

from .extract import EXTRACT_TYPES, Extraction, extract_detailed

ExtractType = Literal["url", "domain", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email"]
ALL_TYPES: list[ExtractType] = sorted(cast("frozenset[ExtractType]", EXTRACT_TYPES))


class ExtractOptions(HttpOptions, kw_only=True, frozen=True):
    """The HTTP connection keys and the extraction keys: the base of both web adapters' Config.

    (msgspec Structs with fields cannot be mixed in side by side, so this extends ``HttpOptions``.)
    """

    types: list[ExtractType] = msgspec.field(default_factory=lambda: list(ALL_TYPES))
    defanged_only: bool = False
    exclude_domains: list[str] = []
    exclude_publisher: bool = True
    extract_time_budget: Duration = Duration(10)
    pdf_max_pages: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50

    def excluded(self, *urls: str) -> list[str]:
        """``exclude_domains``, plus the publisher's domain of each URL when ``exclude_publisher``."""
        out = [d.strip().strip(".").lower() for d in self.exclude_domains if d.strip().strip(".")]
        if self.exclude_publisher:
            out += [p for u in urls if (p := publisher(u))]
        return list(dict.fromkeys(out))


_SPACE = re.compile(r"\s+")


def one_line(text: str, cap: int) -> str:
    """Whitespace runs to one space, unprintable characters dropped, cut at ``cap`` (titles, categories)."""
    text = _SPACE.sub(" ", text[: cap * 4]).strip()
    if not text.isprintable():
        text = "".join(c for c in text if c.isprintable())
    return text[:cap].strip()


def reference_of(url: str) -> str:
    """A page URL as an indicator's reference: without userinfo or fragment."""
    u = urlsplit(url)
    if u.username is None and u.password is None and not u.fragment:
        return url
    host = u.netloc.rpartition("@")[2]
    return u._replace(netloc=host, fragment="").geturl()


def publisher(url: str) -> str | None:
    """The host of ``url`` without a leading ``www.`` (None if it has none)."""
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    return host.removeprefix("www.") or None


async def extract_in_thread(text: str, opts: ExtractOptions, excluded: Iterable[str]) -> Extraction:
    """Run the extractor off the trio thread, bounded by ``extract_time_budget``."""
    excluded = tuple(excluded)

    def run() -> Extraction:
        return extract_detailed(
            text,
            types=opts.types,
            exclude_domains=excluded,
            defanged_only=opts.defanged_only,
            time_budget=float(opts.extract_time_budget),
        )

    return await trio.to_thread.run_sync(run)
