"""Feed entries as the rss adapter reads them: pure functions over the parser's plain answer.

Everything here comes from the feed and is hostile: links must be absolute
http(s) URLs that pass ctd's value gate, titles and categories become one
printable line each with a length cap, and an entry's identity is a hash (a
guid may be any size).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from ctd.adapters.web.html import html_text
from ctd.adapters.web.options import one_line
from ctd.model import value_problem

MAX_TITLE = 300
MAX_TAG = 64
MAX_TAGS = 16
MAX_LINK = 2048


class Entry(NamedTuple):
    key: str  # what "seen" remembers: the guid (else link, else title) and its last update, hashed
    link: str  # the article: an absolute http(s) URL, or ""
    title: str  # one line
    text: str  # title, summary and content as text
    tags: tuple[str, ...]  # the entry's categories
    published: int | None


class Feed(NamedTuple):
    link: str  # the channel's <link>: the publisher's site ("" if none or invalid)
    tags: tuple[str, ...]  # the channel's categories
    entries: list[Entry]
    more: bool  # the document had more entries than were read


def link_of(raw: Any, base: str) -> str:
    """An absolute http(s) URL, resolved against ``base``, that passes the value gate; else ""."""
    if not isinstance(raw, str) or not raw.strip():
        return ""
    try:
        url = urljoin(base, raw.strip())
        scheme = urlsplit(url).scheme.lower()
        host = urlsplit(url).hostname
    except ValueError:
        return ""
    if scheme not in ("http", "https") or not host or len(url) > MAX_LINK or value_problem(url, "url"):
        return ""
    return url


def _fragment(detail: Any) -> str:
    """A title/summary/content value as text (HTML ones through html_text)."""
    if not (isinstance(detail, list) and len(detail) == 2 and all(isinstance(x, str) for x in detail)):
        return ""
    kind, value = detail
    return html_text(value) if "html" in kind else value


def tags_of(raw: Any) -> tuple[str, ...]:
    out = []
    for t in raw if isinstance(raw, list) else []:
        if isinstance(t, str) and (tag := one_line(t, MAX_TAG)):
            out.append(tag)
    return tuple(dict.fromkeys(out))[:MAX_TAGS]


def _key(e: dict[str, Any], title: str, text: str) -> str:
    ident = e.get("id") or e.get("link") or title or text
    stamp = e.get("updated") or e.get("published") or ""
    return hashlib.sha256(f"{ident}\0{stamp}".encode("utf-8", "replace")).hexdigest()[:32]


def _time(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def read_feed(raw: dict[str, Any], feed_url: str) -> Feed:
    """The parser's answer as a Feed; relative links resolve against the feed's URL."""
    entries = []
    for e in raw.get("entries") or []:
        if not isinstance(e, dict):
            continue
        title_text = _fragment(e.get("title"))
        parts = [title_text, _fragment(e.get("summary"))]
        parts += [_fragment(c) for c in e.get("content") or []]
        text = "\n\n".join(p for p in parts if p)
        title = one_line(title_text, MAX_TITLE)
        entries.append(
            Entry(
                key=_key(e, title, text),
                link=link_of(e.get("link"), feed_url),
                title=title,
                text=text,
                tags=tags_of(e.get("tags")),
                published=_time(e.get("published")) or _time(e.get("updated")),
            )
        )
    return Feed(link_of(raw.get("link"), feed_url), tags_of(raw.get("tags")), entries, bool(raw.get("more")))
