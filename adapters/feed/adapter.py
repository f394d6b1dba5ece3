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
what was committed if the validator is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from ctd.adapters.feed import formats as ff
from ctd.adapters.feed.api import Body, FeedHttp
from ctd.adapters.feed.misp import EventStream, ManifestStream, manifest_url
from ctd.adapters.feed.presets import PRESETS
from ctd.adapters.http import HttpOptions, make_client, parse_origins
from ctd.model import Adapter, Batch, Duration, PullContext, Rejected, Secret, Severity, Sighting, UpstreamDataError

_Col = str | int
_Cols = str | int | list[str | int]
_ROLES_SINGLE = ("type", "severity", "first_seen", "last_seen", "comments", "reference", "reputation")
_TYPE = Literal["url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email", "ip"]
# A batch is also cut at this many body bytes: with long records, batch_size
# records held before mapping could otherwise be batch_size MiB.
BATCH_BYTES = 8 << 20
_MAP_TARGETS = frozenset(
    ("url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email", "ip", "")
)


class FeedConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``feed`` adapter's ``[plugins.NAME]`` keys; parsing keys left unset come from the preset."""

    url: str = ""  # required when pulling; for misp the feed's base URL (manifest.json is under it)
    format: Literal["text", "csv", "json", "misp"] | None = None
    preset: Literal["urlhaus", "threatfox", "malwarebazaar", "feodo"] | None = None
    snapshot: bool | None = None  # default: true, false for misp
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 256 << 20
    headers: dict[str, str] = {}
    auth_key: Secret | None = None  # a secret: sent as the Auth-Key header (abuse.ch)
    # Other origins (https://cdn.example) a redirect may lead to; followed without
    # Auth-Key, custom headers or credentials. Any other cross-origin redirect fails the pull.
    allow_redirects_to: list[str] = []
    # One transaction per batch: bigger batches write fewer index pages per IoC.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20_000
    refetch_after: Duration = Duration(86400)
    # parsing (all formats)
    type: _TYPE | None = None
    severity: Severity | None = None
    comment_prefix: str | None = None
    tag_separator: str | None = None
    null_values: list[str] | None = None
    type_map: dict[str, str] | None = None
    reputation_scale: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # csv
    delimiter: str | None = None
    quotechar: str | None = None
    header: bool | None = None
    skip_initial_space: bool | None = None
    value_column: _Cols | None = None
    type_column: _Col | None = None
    severity_column: _Col | None = None
    tags_column: _Cols | None = None
    first_seen_column: _Col | None = None
    last_seen_column: _Col | None = None
    comments_column: _Col | None = None
    reference_column: _Col | None = None
    reputation_column: _Col | None = None
    # json
    json_path: str | None = None
    value_field: str | list[str] | None = None
    type_field: str | None = None
    severity_field: str | None = None
    tags_field: str | list[str] | None = None
    first_seen_field: str | None = None
    last_seen_field: str | None = None
    comments_field: str | None = None
    reference_field: str | None = None
    reputation_field: str | None = None

    def __post_init__(self) -> None:
        resolve(self)  # msgspec reports a ValueError here as a validation error of the table
        parse_origins(self.allow_redirects_to)

    @property
    def effective_format(self) -> str:
        return self.format or PRESETS.get(self.preset or "", {}).get("format", "text")

    @property
    def effective_snapshot(self) -> bool:
        return self.snapshot if self.snapshot is not None else self.effective_format != "misp"


def _tuple(v: Any) -> tuple[Any, ...]:
    return () if v is None else tuple(v) if isinstance(v, list) else (v,)


def resolve(cfg: FeedConfig) -> ff.Spec:
    """The parsing spec: the operator's keys, else the preset's, else the defaults (raises ValueError)."""
    preset = PRESETS.get(cfg.preset or "", {})

    def get(key: str, default: Any = None) -> Any:
        v = getattr(cfg, key)
        return preset.get(key, default) if v is None else v

    fmt = cfg.effective_format
    delimiter, quotechar = get("delimiter", ","), get("quotechar", '"')
    if len(delimiter) != 1 or delimiter in "\r\n" or len(quotechar) != 1 or quotechar in "\r\n":
        raise ValueError("delimiter and quotechar must be one character (not a newline)")
    prefix, sep = get("comment_prefix", "#"), get("tag_separator", ";")
    if prefix != prefix.strip() or not sep:
        raise ValueError("comment_prefix must not have surrounding spaces; tag_separator must not be empty")
    type_map = get("type_map", {})
    if bad := sorted(set(type_map.values()) - _MAP_TARGETS):
        raise ValueError(f"type_map targets must be ctd types, 'ip' or '' (skip): {bad!r}")
    header = get("header", True)
    fields: dict[str, tuple[_Col, ...]] = {}
    if fmt == "csv":
        fields["value"] = _tuple(get("value_column", "value"))
        fields["tags"] = _tuple(get("tags_column"))
        fields.update({r: _tuple(get(f"{r}_column")) for r in _ROLES_SINGLE})
        cols = [c for cs in fields.values() for c in cs]
        if any(isinstance(c, int) and c < 0 for c in cols):
            raise ValueError("column numbers are 0-based indices >= 0")
        if not header and any(isinstance(c, str) for c in cols):
            raise ValueError("columns given by name need header = true")
    elif fmt == "json":
        fields["value"] = _tuple(get("value_field", "value"))
        fields["tags"] = _tuple(get("tags_field"))
        fields.update({r: _tuple(get(f"{r}_field")) for r in _ROLES_SINGLE})
    if fmt in ("csv", "json") and not fields["value"]:
        raise ValueError("value_column / value_field must name at least one column")
    path = get("json_path", "")
    return ff.Spec(
        format=fmt,
        type=get("type"),
        severity=get("severity", "unknown"),
        comment_prefix=prefix,
        tag_separator=sep,
        null_values=frozenset(get("null_values", [])),
        type_map=dict(type_map),
        reputation_scale=get("reputation_scale", 10),
        delimiter=delimiter,
        quotechar=quotechar,
        header=header,
        skip_initial_space=get("skip_initial_space", False),
        json_path=tuple(path.split(".")) if path else (),
        fields=fields,
    )


def describe_url(url: str) -> str:
    """The URL for messages, without query or inner path (abuse.ch puts keys in both)."""
    u = urlsplit(url)
    last = u.path.rstrip("/").rpartition("/")[2]
    return f"{u.scheme}://{u.hostname or ''}/" + (f".../{last}" if u.path.count("/") > 1 else last)


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

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        if self.spec.format == "misp":
            async with aclosing(self._misp(ctx)) as batches:
                async for batch in batches:
                    yield batch
            return
        sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else None
        resuming = sub is not None and not sub.get("done")
        async with self.http.open(self.config.url, self.http.conditional(ctx, resuming), self.what) as body:
            if body is None:
                return  # 304: nothing changed, nothing to re-report or retract
            skip = 0
            if resuming and sub and body.validator and sub.get("validator") == body.validator:
                skip = sub.get("pos") if isinstance(sub.get("pos"), int) else 0
            cursor = {**body.validators, "fetched_at": ctx.now}
            batches = self._lines(ctx, body, skip) if self.spec.format != "json" else self._json(ctx, body, skip)
            good = bad = 0
            async with aclosing(batches):
                async for batch, last in batches:
                    good += len(batch.sightings)
                    bad += len(batch.rejected)
                    if not last:
                        yield batch
                        continue
                    if body.size == 0:
                        raise UpstreamDataError(f"{self.what}: empty response")
                    # A body where every record was bad is an error page, not an empty feed.
                    complete = self.config.effective_snapshot and not (good == 0 and bad > 0)
                    yield msgspec.structs.replace(
                        batch, cursor=cursor, snapshot_end=complete, sub_checkpoint={"done": True}
                    )

    async def _lines(self, ctx: PullContext, body: Body, skip: int) -> AsyncIterator[tuple[Batch, bool]]:
        stream = (ff.CsvStream if self.spec.format == "csv" else ff.TextStream)(self.spec, ctx.now)
        splitter = ff.LineSplitter()
        group: ff.Lines = []
        held = 0  # body bytes behind ``group``
        size = self.config.batch_size

        async def parse(lines: ff.Lines) -> Batch:
            try:
                out, rejected = await trio.to_thread.run_sync(stream.feed, lines, skip)
            except ff.FormatError as exc:
                raise UpstreamDataError(f"{self.what}: {exc}") from None
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
        yield await parse(group + splitter.finish()), True

    async def _json(self, ctx: PullContext, body: Body, skip: int) -> AsyncIterator[tuple[Batch, bool]]:
        """Items parsed as the body streams in (never joined), mapped a batch at a time; the first
        ``skip`` items (committed before an interruption) are dropped unmapped."""
        stream = ff.JsonStream(self.spec)
        pending: list[Any] = []
        first = 0  # the number of pending[0] in the document
        held = 0  # body bytes behind ``pending``
        size = self.config.batch_size

        async def parse(items: list[Any], start: int) -> Batch:
            out, rejected = await trio.to_thread.run_sync(ff.json_records, items, start, self.spec, ctx.now)
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

    async def _misp(self, ctx: PullContext) -> AsyncIterator[Batch]:
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
        async with self.http.open(murl, self.http.conditional(ctx, resuming), self.what) as body:
            if body is None:
                return
            manifest, version = await self._manifest(body)
            validators = body.validators
        known = (ctx.cursor or {}).get("events") if not snapshot else None
        known = known if isinstance(known, dict) else {}
        todo = sorted((ts, uuid) for uuid, ts in manifest.items() if snapshot or known.get(uuid) != ts)
        skip = sub.get("pos", 0) if resuming and sub and sub.get("validator") == version else 0
        done = {u: t for u, t in known.items() if u in manifest}  # events dropped from the manifest are forgotten
        base = murl.removesuffix("manifest.json")
        complete = True
        live: set[tuple[str, str]] = set()
        dead: list[Sighting] = []  # deferred: a value live in any event of this pull is not retracted
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        for i, (ts, uuid) in enumerate(todo):
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
                    cursor=None if snapshot else {"events": dict(done)},
                )
                out, rejected = [], []
        retract = {(s.type, s.value): s for s in dead if (s.type, s.value) not in live}
        cursor: dict[str, Any] = {**validators, "fetched_at": ctx.now} if complete else {}
        if not snapshot:
            cursor["events"] = done
        yield Batch(
            sightings=out + list(retract.values()),
            rejected=rejected,
            cursor=cursor,
            snapshot_end=snapshot and complete,
            sub_checkpoint={"done": True},
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
