"""The web corpus (tests/corpus_web) served over loopback, and one pull through the real pipeline into the real store.

``corpus_server`` serves every file of the corpus by its path (``/feed-rss20/feed.xml``)
with a Content-Type by suffix and an ETag, answering ``If-None-Match`` with 304;
``extra`` adds or overrides paths (a test's own feed, a PDF, a redirect).

``Pipeline`` parses a plugin table with the real config loader, opens the real
adapter (its own HTTP client) with ``open_adapter``, and runs ``pull_once`` of
the source actor against the real store actor (``run_store``): what a pull
stores is what the daemon would store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import tomli_w
import trio

from ctd.config import parse_config
from ctd.errors import CtdError, describe
from ctd.plugins import open_adapter
from ctd.rules.compiler import Rule
from ctd.sources.actor import AllowlistRef, PullResult, SourceStatus, pull_once
from ctd.store import Selection, Store, run_store
from tests.loopback import Received, Reply, Server, serve
from tests.webcorpus import ROOT

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/rss+xml",
    ".rdf": "application/rdf+xml",
    ".txt": "text/plain; charset=utf-8",
    ".pdf": "application/pdf",
}

Extra = dict[str, Reply | Callable[[Received], Reply]]


def corpus_reply(path: str, req: Received) -> Reply:
    file = (ROOT / path.lstrip("/")).resolve()
    if ROOT not in file.parents or not file.is_file():
        return 404, {"Content-Type": "text/plain"}, b"not here\n"
    data = file.read_bytes()
    ctype = TYPES.get(file.suffix, "application/octet-stream")
    if file.name == "feed.xml" and b'version="0.91"' in data[:400]:
        ctype = "text/xml; charset=iso-8859-1"
    return typed(data, ctype, req)


def typed(data: bytes, ctype: str, req: Received) -> Reply:
    """A 200 with an ETag, or 304 when the request already has it."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
    if dict((k.lower(), v) for k, v in req.headers).get("if-none-match") == etag:
        return 304, {"ETag": etag}, b""
    return 200, {"Content-Type": ctype, "ETag": etag}, data


@contextmanager
def corpus_server(host: str = "127.0.0.1", extra: Extra | None = None) -> Iterator[Server]:
    extra = extra if extra is not None else {}

    def handle(req: Received) -> Reply:
        path = req.target.partition("?")[0]
        got = extra.get(path)
        if got is not None:
            return got(req) if callable(got) else got
        return corpus_reply(path, req)

    with serve(host, handle) as server:
        yield server


class Pipeline:
    """One source ``name`` (a plugin table) pulled through the real adapter, source actor code and store."""

    def __init__(self, store: Store, tables: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.config = parse_config(tomli_w.dumps({"plugins": tables}))
        self.status = {name: SourceStatus(name, p) for name, p in self.config.plugins.items()}

    async def pull(self, name: str) -> PullResult:
        """One pull; a failed one is returned with its error and the counts of what it committed (as ctd run --once)."""
        plugin = self.config.plugins[name]
        status = self.status[name]
        try:
            async with open_adapter(name, plugin) as adapter:
                return await pull_once(name, plugin, adapter, self.store, AllowlistRef(), status)
        except CtdError as exc:
            return PullResult(source=name, error=describe(exc), **msgspec.structs.asdict(status.last_counts))

    async def stored(self, source: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """Every stored indicator (of ``source``) by (type, value), as ``indicators search`` shows it."""
        rows = await self.store.search(type_=None, source=source, active=None, limit=100_000)
        return {(r["type"], r["value"]): r for r in rows}

    async def selected(self, rule: str) -> set[tuple[str, str]]:
        """What a sharing with this rule would send now (active indicators the rule selects)."""
        got = await self.store.rule_test(Selection(rule=Rule(rule), at=2_000_000_000), sample=100_000)
        return {(v["type"], v["value"]) for v in got["sample"]}


async def open_pipeline(nursery: trio.Nursery, db: Path, tables: dict[str, dict[str, Any]]) -> Pipeline:
    store = await nursery.start(run_store, str(db))
    return Pipeline(store, tables)
