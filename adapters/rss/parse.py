"""An RSS/Atom document parsed by feedparser in a child process (see ``ctd.adapters.web.worker``).

feedparser reads RSS 0.9x, 1.0 (RDF) and 2.0 and Atom 0.3/1.0, well-formed or
not. It is given the bytes ctd downloaded (as a stream: given a ``str`` or
``bytes`` it may take them for a URL to fetch or a local file name to open),
with HTML sanitising and relative-URI rewriting off (ctd reads only the text,
and turns HTML into text itself). Its worst cases are slow (about 7 s per MB
of deeply nested markup) and cannot be interrupted, so it runs in a child that
is killed when its time is up.

The child answers plain JSON: the channel's link and categories, and per
entry its id, link, title/summary/content (each with its media type), dates
and categories; at most ``max_entries`` entries, in document order.
"""

from __future__ import annotations

import calendar
import io
from typing import Any

from ctd.adapters.web.worker import WorkerError, child_main, run_child


class FeedError(Exception):
    """Not an RSS or Atom document, or it could not be parsed in time."""


def _detail(d: Any) -> list[str] | None:
    if not d:
        return None
    value = d.get("value")
    return [str(d.get("type") or "text/plain"), value] if isinstance(value, str) and value else None


def _when(entry: Any, key: str) -> int | None:
    t = entry.get(f"{key}_parsed")
    try:
        return calendar.timegm(t) if t else None
    except (TypeError, ValueError, OverflowError):
        return None


def _terms(tags: Any) -> list[str]:
    out = []
    for t in tags or []:
        term = t.get("term") or t.get("label")
        if isinstance(term, str):
            out.append(term)
    return out


def parse_sync(data: bytes, max_entries: int) -> dict[str, Any]:
    """The feed as plain data (in this process: the child calls it, tests may too)."""
    import feedparser

    parsed = feedparser.parse(
        io.BytesIO(data),
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    if not parsed.get("version") and not parsed.entries:
        raise FeedError("not an RSS or Atom feed")
    feed = parsed.feed
    entries = []
    for e in parsed.entries[:max_entries]:
        link = e.get("link")
        entries.append(
            {
                "id": e.get("id") if isinstance(e.get("id"), str) else None,
                "link": link if isinstance(link, str) else None,
                "title": _detail(e.get("title_detail")),
                "summary": _detail(e.get("summary_detail")),
                "content": [d for c in e.get("content") or [] if (d := _detail(c))],
                "published": _when(e, "published"),
                "updated": _when(e, "updated"),
                "tags": _terms(e.get("tags")),
            }
        )
    link = feed.get("link")
    return {
        "version": parsed.get("version") or "",
        "link": link if isinstance(link, str) else "",
        "tags": _terms(feed.get("tags")),
        "entries": entries,
        "more": len(parsed.entries) > max_entries,
    }


async def parse_feed(data: bytes, *, max_entries: int, time_budget: float) -> dict[str, Any]:
    """Parse in a child killed after ``time_budget`` s; FeedError if it is not a feed or takes too long.

    Links come back as written (relative ones are resolved by the caller against the feed's URL, which is
    never passed to the child: its command line is visible to every user, and a feed URL may hold a key).
    """
    try:
        return await run_child(
            __name__, [str(max_entries)], data, time_budget=time_budget, max_reply=8 * len(data) + 65536
        )
    except WorkerError as exc:
        raise FeedError(str(exc)) from None


def _work(data: bytes, args: list[str]) -> dict[str, Any]:
    return parse_sync(data, int(args[0]))


if __name__ == "__main__":
    child_main(_work, (FeedError,))
