"""Fetching a page for the web adapters: one capped GET, and its text by what it is (HTML, PDF, plain text).

``fetch`` sends a conditional GET when given validators and yields None for
``304 Not Modified``. The body is read with the feed adapter's reader
(``Content-Encoding`` decoded piece by piece, ``max_bytes`` enforced on the
wire and after decompression: a larger body fails, it is never cut to a
different page). ``document_text`` turns it into text off the trio thread:
HTML through ``html_main_text`` (main content only) or ``html_text`` (all
visible text), PDF in a child process (``pdf.pdf_text``), ``text/*`` and JSON
as they are. Anything else (images, archives, executables) is refused.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import httpx
import trio

from ctd.adapters.feed.api import Body
from ctd.adapters.http import map_http_errors, raise_for_status
from ctd.model import UpstreamDataError

from .html import MAX_HTML_BYTES, html_main_text, html_text
from .pdf import PdfError, pdf_text

_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]{1,40})", re.IGNORECASE)
_TEXT_TYPES = frozenset(("application/json", "application/xml", "text/xml"))
_HTML_TYPES = frozenset(("text/html", "application/xhtml+xml"))
_HTML_SNIFF = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)


class Fetched(NamedTuple):
    """A 200 response read to its end."""

    data: bytes
    content_type: str  # the media type, lower-case, without parameters ("" if none)
    charset: str | None
    validators: dict[str, str]  # etag / last_modified, for the next conditional GET


class Document(NamedTuple):
    text: str
    kind: str  # html | pdf | text
    complete: bool  # False when a cap (pages, characters) cut the text short
    title: str  # the HTML <title>, or ""


def conditional_headers(validators: dict | None) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from stored validators (ignores anything that is not a string)."""
    h: dict[str, str] = {}
    if isinstance(validators, dict):
        if isinstance(etag := validators.get("etag"), str):
            h["If-None-Match"] = etag
        if isinstance(lm := validators.get("last_modified"), str):
            h["If-Modified-Since"] = lm
    return h


async def fetch(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], max_bytes: int, what: str
) -> Fetched | None:
    """GET ``url`` (conditional if ``headers`` say so); None for 304. Raises ctd errors."""
    with map_http_errors(what):
        async with client.stream("GET", url, headers={"Accept-Encoding": "gzip, deflate", **headers}) as resp:
            if resp.status_code == 304:
                return None
            raise_for_status(resp, what)
            if resp.status_code != 200:
                raise UpstreamDataError(f"{what}: unexpected HTTP {resp.status_code}")
            body = Body(resp, max_bytes, what)
            data = await body.read()
            ctype = resp.headers.get("content-type", "")
            m = _CHARSET.search(ctype)
            return Fetched(data, ctype.partition(";")[0].strip().lower(), m.group(1) if m else None, body.validators)


def kind_of(fetched: Fetched) -> str | None:
    """html, pdf or text by the Content-Type (sniffed when it is missing or generic); None: not a document."""
    ctype, head = fetched.content_type, fetched.data[:1024]
    if ctype == "application/pdf" or head.startswith(b"%PDF-"):
        return "pdf"
    if ctype in _HTML_TYPES or (ctype in ("", "application/octet-stream", "text/plain") and _HTML_SNIFF.match(head)):
        return "html"
    if ctype.startswith("text/") or ctype in _TEXT_TYPES or ctype.endswith(("+json", "+xml")):
        return "text"
    return None


_TITLE = re.compile(rb"<title[^>]{0,200}>([^<]{0,1000})</title", re.IGNORECASE)


async def document_text(fetched: Fetched, *, main: bool, what: str, time_budget: float, pdf_max_pages: int) -> Document:
    """The text of a fetched document; UpstreamDataError for what is not a readable document."""
    kind = kind_of(fetched)
    if kind is None:
        raise UpstreamDataError(f"{what}: not a page or document (Content-Type {fetched.content_type[:60]!r})")
    if kind == "pdf":
        try:
            got = await pdf_text(fetched.data, time_budget=time_budget, max_pages=pdf_max_pages)
        except PdfError as exc:
            raise UpstreamDataError(f"{what}: {exc}") from None
        return Document(got.text, "pdf", got.complete, "")
    if kind == "html":
        read = html_main_text if main else html_text
        text = await trio.to_thread.run_sync(lambda: read(fetched.data, encoding=fetched.charset))
        m = _TITLE.search(fetched.data, 0, 64 * 1024)
        title = html_text(m.group(1), encoding=fetched.charset) if m else ""
        return Document(text, "html", len(fetched.data) <= MAX_HTML_BYTES, title)
    text = _decode(fetched.data, fetched.charset)
    return Document(text, "text", True, "")


def _decode(data: bytes, charset: str | None) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    for codec in (charset, "utf-8"):
        if not codec:
            continue
        try:
            return data.decode(codec)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", errors="replace")
