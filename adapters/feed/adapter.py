"""The ``feed`` adapter: a threat feed over HTTP(S) (text, CSV, JSON or a MISP feed).

Each pull is a conditional GET (``If-None-Match`` / ``If-Modified-Since`` from
the validators kept in the cursor). ``304 Not Modified`` means nothing changed:
the pull yields no batch at all, so nothing is re-reported and nothing is
retracted. A ``200`` body is decoded (``Content-Encoding: gzip`` and/or a
gzip file) and parsed while it streams, with ``max_bytes`` enforced on the
wire and after decompression. Only a body read to its end can complete a
snapshot: a truncated, oversized or failed download raises after the batches
parsed so far, and the last batch — the only one with ``snapshot_end`` and the
new validators — is never reached, so a partial feed never retracts anything.

Resuming: each batch's sub-checkpoint holds the feed's validator and the line
(item, event) reached; a resumed pull downloads again unconditionally and skips
what was committed if the validator is unchanged. If it changed (or the feed
has none), the pull starts a new snapshot (``snapshot_start``): what the
interrupted pull committed from the old content does not count for it.

Re-reading after an upgrade: the cursor carries ``PARSER_VERSION``. A cursor
written by another version is not trusted to say what was read: the GET is
unconditional (a ``304`` would hide the feed) and a MISP feed fetches every
event again, so what an older ctd rejected is read by this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from ctd.adapters.feed import formats as ff
from ctd.adapters.feed.api import Body, FeedHttp
from ctd.adapters.feed.config import FeedConfig, resolve
from ctd.adapters.feed.misp import EventStream, ManifestStream, manifest_url
from ctd.adapters.feed.records import PARSER_VERSION
from ctd.adapters.http import make_client
from ctd.model import MALFORMED, Adapter, Batch, PullContext, Rejected, Sighting, UpstreamDataError

# A batch is also cut at this many body bytes: with long records, batch_size
# records held before mapping could otherwise be batch_size MiB.
BATCH_BYTES = 8 << 20


def describe_url(url: str) -> str:
    """The URL for messages, without query or inner path (abuse.ch puts keys in both)."""
    u = urlsplit(url)
    last = u.path.rstrip("/").rpartition("/")[2]
    return f"{u.scheme}://{u.hostname or ''}/" + (f".../{last}" if u.path.count("/") > 1 else last)


def _nothing_read(bad: int, skipped: int, rejected: list[Rejected]) -> str:
    """Why a body with no value at all is an error, with the first reasons."""
    what = [
        f"{bad} records rejected" if bad else "",
        f"{skipped} lines or items that are not records" if skipped else "",
    ]
    first = "; ".join(f"{r.where}: {r.reason}" for r in rejected[:3])
    return f"no indicator in the body ({', '.join(w for w in what if w)}): not this feed?" + (
        f" (first: {first})" if first else ""
    )


def _stale(cursor: dict | None) -> bool:
    """A cursor written by another parser version (or before versions were kept)."""
    return isinstance(cursor, dict) and cursor.get("parser") != PARSER_VERSION


class FeedAdapter(Adapter):
    """Pull indicators from an HTTP threat feed: text, csv, json or a MISP feed."""

    Config: ClassVar[type[FeedConfig]] = FeedConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = False

    def __init__(self, name: str, config: FeedConfig, client: httpx.AsyncClient | None) -> None:
        self.name = name
        self.config = config
        self.client: httpx.AsyncClient = client if client is not None else self.make_client(config)
        self.http = FeedHttp(self.client, config)
        self.spec = resolve(config)
        self.what = f"feed {describe_url(config.url)}"
        self.skipped = 0  # lines or items of the body being read that were not records (preamble, markup)

    @classmethod
    def check_plugin(cls, pull: bool, config: FeedConfig) -> None:
        if pull and not config.url:
            raise ValueError("a pulling feed plugin needs `url`")
        if config.url and urlsplit(config.url).scheme not in ("http", "https"):
            raise ValueError("url must be an http:// or https:// URL")

    @classmethod
    def make_client(cls, config: FeedConfig) -> httpx.AsyncClient:
        return make_client(config, allow_redirects_to=config.allow_redirects_to, redirect_option="allow_redirects_to")

    @classmethod
    def verifies_tls(cls, options: FeedConfig) -> bool:
        return options.verify_tls

    async def aclose(self) -> None:
        await self.client.aclose()

    def _conditional(self, ctx: PullContext, resuming: bool) -> dict | None:
        """The validators to send: none when resuming, after refetch_after, or from another parser version."""
        return None if _stale(ctx.cursor) else self.http.conditional(ctx, resuming)

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        if self.spec.format == "misp":
            async with aclosing(self._misp(ctx)) as events:
                async for batch in events:
                    yield batch
            return
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else None
        resuming = sub is not None and not sub.get("done")
        async with self.http.open(self.config.url, self._conditional(ctx, resuming), self.what) as body:
            if body is None:
                return  # 304: nothing changed, nothing to re-report or retract
            body.progress, ctx.progress.bytes_total = ctx.progress, body.total
            skip = 0
            if resuming and sub and body.validator and sub.get("validator") == body.validator:
                pos = sub.get("pos")
                skip = pos if isinstance(pos, int) else 0
            cursor = {**body.validators, "fetched_at": ctx.now, "parser": PARSER_VERSION}
            self.skipped = 0
            batches = self._lines(ctx, body, skip) if self.spec.format != "json" else self._json(ctx, body, skip)
            good = bad = 0
            start = skip == 0  # not skipping what was committed: the first batch starts a new snapshot
            async with aclosing(batches):
                async for batch, last in batches:
                    if start:
                        batch, start = msgspec.structs.replace(batch, snapshot_start=True), False
                    good += len(batch.sightings)
                    bad += sum(1 for r in batch.rejected if r.kind == MALFORMED)
                    if not last:
                        yield batch
                        continue
                    if body.size == 0:
                        raise UpstreamDataError(f"{self.what}: empty response")
                    if good == 0 and (bad or self.skipped) and not skip:
                        # Not one value, and records that were bad or not records at all: an error
                        # page where the feed should be, not an empty feed. Its rejections are kept
                        # (this batch, without a resume point or new validators), then the pull fails.
                        yield msgspec.structs.replace(batch, sub_checkpoint=None, cursor=None, snapshot_end=False)
                        raise UpstreamDataError(f"{self.what}: {_nothing_read(bad, self.skipped, batch.rejected)}")
                    yield msgspec.structs.replace(
                        batch, cursor=cursor, snapshot_end=self.config.effective_snapshot, sub_checkpoint={"done": True}
                    )

    async def _lines(self, ctx: PullContext, body: Body, skip: int) -> AsyncGenerator[tuple[Batch, bool], None]:
        stream = ff.line_stream(self.spec, ctx.now)
        splitter = ff.LineSplitter()
        group: ff.Lines = []
        held = 0  # body bytes behind ``group``
        size = self.config.batch_size

        async def parse(lines: ff.Lines, last: bool = False) -> Batch:
            try:
                out, rejected = await trio.to_thread.run_sync(stream.feed, lines, skip, last)
            except ff.FormatError as exc:
                raise UpstreamDataError(f"{self.what}: {exc}") from None
            self.skipped = stream.skipped
            pos = lines[-1][0] if lines else skip
            return Batch(sightings=out, rejected=rejected, sub_checkpoint={"validator": body.validator, "pos": pos})

        try:
            async with aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    group += splitter.feed(chunk)
                    held += len(chunk)
                    if len(group) >= size or (group and held >= BATCH_BYTES):
                        yield await parse(group), False
                        group, held = [], 0
        except ff.FormatError as exc:
            raise UpstreamDataError(f"{self.what}: {exc}") from None
        yield await parse(group + splitter.finish(), last=True), True

    async def _json(self, ctx: PullContext, body: Body, skip: int) -> AsyncGenerator[tuple[Batch, bool], None]:
        """Items parsed as the body streams in (never joined), mapped a batch at a time; the first
        ``skip`` items (committed before an interruption) are dropped unmapped."""
        stream = ff.JsonStream(self.spec)
        pending: list[Any] = []
        first = 0  # the number of pending[0] in the document
        held = 0  # body bytes behind ``pending``
        size = self.config.batch_size

        async def parse(items: list[Any], start: int) -> Batch:
            out, rejected, skipped = await trio.to_thread.run_sync(ff.json_records, items, start, self.spec, ctx.now)
            self.skipped += skipped
            return Batch(
                sightings=out,
                rejected=rejected,
                sub_checkpoint={"validator": body.validator, "pos": start + len(items)},
            )

        def take(items: list[Any]) -> None:
            nonlocal first
            pending.extend(items)
            if first < skip:
                drop = min(skip - first, len(pending))
                del pending[:drop]
                first += drop

        try:
            async with aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    # Tokenising is CPU work: off the trio thread, like the mapping.
                    take(await trio.to_thread.run_sync(stream.feed, chunk))
                    held += len(chunk)
                    while len(pending) >= size or (pending and held >= BATCH_BYTES):
                        n = min(size, len(pending))
                        yield await parse(pending[:n], first), False
                        del pending[:n]
                        first += n
                        held = 0
            take(await trio.to_thread.run_sync(stream.finish))
        except ff.FormatError as exc:
            raise UpstreamDataError(f"{self.what}: {exc}") from None
        yield await parse(pending, first), True

    async def _misp(self, ctx: PullContext) -> AsyncGenerator[Batch, None]:
        """A MISP feed: the manifest (conditional GET), then the events that changed (all with snapshot).

        Incremental mode keeps each event's timestamp in the cursor: an event is
        fetched when it is new or its timestamp differs. An event that fails is
        counted as rejected and retried next pull (its timestamp is not kept,
        the manifest's validators are dropped), and it withholds snapshot_end.
        """
        cfg = self.config
        snapshot = cfg.effective_snapshot
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else None
        resuming = sub is not None and not sub.get("done")
        murl = manifest_url(cfg.url)
        async with self.http.open(murl, self._conditional(ctx, resuming), self.what) as body:
            if body is None:
                return
            manifest, version = await self._manifest(body)
            validators = body.validators
        # Events an older parser read are read again: what it rejected may be read now.
        known = (ctx.cursor or {}).get("events") if not snapshot and not _stale(ctx.cursor) else None
        known = known if isinstance(known, dict) else {}
        todo = sorted((ts, uuid) for uuid, ts in manifest.items() if snapshot or known.get(uuid) != ts)
        skip = sub.get("pos", 0) if resuming and sub and sub.get("validator") == version else 0
        start = skip == 0  # a new snapshot: what an interrupted pull committed does not count for it
        done = {u: t for u, t in known.items() if u in manifest}  # events dropped from the manifest are forgotten
        base = murl.removesuffix("manifest.json")
        complete = True
        live: set[tuple[str, str]] = set()
        dead: list[Sighting] = []  # deferred: a value live in any event of this pull is not retracted
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        ctx.progress.pages_total = len(todo)  # one event file a page
        for i, (ts, uuid) in enumerate(todo):
            ctx.progress.pages_read = i
            if i < skip:
                continue
            url = base + f"{uuid}.json"
            got = await self._misp_event(url, uuid, ctx.now)
            if isinstance(got, str):
                rejected.append(Rejected(where=f"event {uuid}", reason=got))
                complete = False
                continue
            (sightings, bad), gone = got
            live.update((s.type, s.value) for s in sightings)
            out += sightings
            rejected += bad
            dead += gone
            done[uuid] = ts
            if len(out) >= cfg.batch_size and i + 1 < len(todo):
                # No validators yet: an interrupted pull must fetch the manifest again.
                yield Batch(
                    sightings=out,
                    rejected=rejected,
                    sub_checkpoint={"validator": version, "pos": i + 1},
                    cursor=None if snapshot else {"events": dict(done), "parser": PARSER_VERSION},
                    snapshot_start=start,
                )
                out, rejected, start = [], [], False
        retract = {(s.type, s.value): s for s in dead if (s.type, s.value) not in live}
        cursor: dict[str, Any] = {**validators, "fetched_at": ctx.now} if complete else {}
        if not snapshot:
            cursor["events"] = done
            cursor["parser"] = PARSER_VERSION
        yield Batch(
            sightings=out + list(retract.values()),
            rejected=rejected,
            cursor=cursor,
            snapshot_end=snapshot and complete,
            sub_checkpoint={"done": True},
            snapshot_start=start,
        )

    async def _manifest(self, body: Body) -> tuple[dict[str, int], str]:
        """The manifest (uuid -> timestamp) parsed as it downloads, and a digest of its bytes."""
        stream = ManifestStream()
        digest = hashlib.sha256()
        try:
            async with aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    digest.update(chunk)
                    await trio.to_thread.run_sync(stream.feed, chunk)
            return stream.finish(), digest.hexdigest()[:32]
        except ff.FormatError as exc:
            raise UpstreamDataError(f"{self.what}: {exc}") from None

    async def _misp_event(self, url: str, uuid: str, now: int) -> tuple[ff.Parsed, list[Sighting]] | str:
        """An event file parsed as it downloads, or the reason it was skipped (4xx, too large, not an event)."""
        try:
            async with self.http.open(url, None, f"feed event {uuid}") as body:
                if body is None:
                    return "HTTP 304 without a conditional request"
                stream = EventStream()
                async with aclosing(body.chunks()) as chunks:
                    async for chunk in chunks:
                        await trio.to_thread.run_sync(stream.feed, chunk)
                return await trio.to_thread.run_sync(stream.finish, now, url)
        except (UpstreamDataError, ff.FormatError) as exc:
            return str(exc)

    async def check(self) -> str:
        """GET the feed (its manifest for misp) and report the status line; reads no body."""
        url = self.config.url
        if self.spec.format == "misp":
            url = manifest_url(url)
        async with self.http.open(url, None, self.what) as body:
            assert body is not None
            ctype = body.resp.headers.get("content-type", "?")
            return f"HTTP 200, {ctype}, {self.spec.format}" + (", has ETag" if "etag" in body.validators else "")
