"""MISP feeds for the ``feed`` adapter: a ``manifest.json`` and one JSON file per event.

The mapping half is pure (bytes in, sightings and rejections out): only
``to_ids`` attributes of a mapped type count, and ``deleted`` ones are
retractions; event files are parsed as they download (``EventStream``), and
attributes that cannot count are dropped as they are read. The fetching half (``pull``) drives the adapter's HTTP GETs: the
manifest conditionally, then the events that changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import ijson
import msgspec
import trio

from ctd.adapters.file import formats as fmt
from ctd.adapters.feed.stream import MAX_DEPTH, MAX_ITEM, SLICE
from ctd.adapters.feed.records import IP_TYPES, FormatError, Parsed, strip_port
from ctd.adapters.file.formats import BadRecord, show
from ctd.model import Batch, PullContext, Rejected, Sighting, UpstreamDataError

if TYPE_CHECKING:
    from ctd.adapters.feed.adapter import FeedAdapter

# --------------------------------------------------------------------------- mapping

# MISP attribute type -> (ctd type or "ip", which part of a composite "a|b" value).
# A composite maps each part it keeps: domain|ip gives both.
MISP_TYPES: dict[str, tuple[tuple[str, int], ...]] = {
    "ip-src": (("ip", 0),), "ip-dst": (("ip", 0),),
    "ip-src|port": (("ip", 0),), "ip-dst|port": (("ip", 0),),
    "domain": (("domain", 0),), "hostname": (("hostname", 0),), "hostname|port": (("hostname", 0),),
    "domain|ip": (("domain", 0), ("ip", 1)),
    "url": (("url", 0),),
    "md5": (("md5", 0),), "sha1": (("sha1", 0),), "sha256": (("sha256", 0),),
    "filename|md5": (("md5", 1),), "filename|sha1": (("sha1", 1),), "filename|sha256": (("sha256", 1),),
    "malware-sample": (("md5", 1),),
    "email": (("email", 0),), "email-src": (("email", 0),), "email-dst": (("email", 0),),
}
_MISP_SEVERITY = {"1": "high", "2": "medium", "3": "low"}


class MispTag(msgspec.Struct):
    name: str = ""


class MispAttribute(msgspec.Struct):
    type: str = ""
    value: str = ""
    to_ids: bool = False
    deleted: bool = False
    comment: str = ""
    timestamp: int | str | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    Tag: list[MispTag] = []


class MispObject(msgspec.Struct):
    Attribute: list[MispAttribute] = []


class MispEvent(msgspec.Struct):
    uuid: str = ""
    info: str = ""
    threat_level_id: int | str | None = None
    timestamp: int | str | None = None
    Tag: list[MispTag] = []
    Attribute: list[MispAttribute] = []
    Object: list[MispObject] = []


class ManifestEntry(msgspec.Struct):
    timestamp: int | str = 0
    info: str = ""


def parse_manifest(data: bytes) -> dict[str, int]:
    """``manifest.json`` -> event uuid -> event timestamp (raises FormatError)."""
    try:
        entries = msgspec.json.decode(data, type=dict[str, ManifestEntry])
    except msgspec.DecodeError as exc:
        raise FormatError(f"bad manifest.json: {exc}") from None
    except RecursionError:
        raise FormatError("bad manifest.json: nested too deeply to parse") from None
    out: dict[str, int] = {}
    for uuid, e in entries.items():
        try:
            out[uuid] = int(e.timestamp)
        except ValueError:
            raise FormatError(f"manifest.json: event {uuid}: bad timestamp {show(str(e.timestamp))}") from None
    return out


def _epoch(raw: int | str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def misp_event(data: bytes, now: int, reference: str = "") -> tuple[Parsed, list[Sighting]]:
    """One whole event file -> ((live sightings, rejected), retracted sightings).

    Only ``to_ids`` attributes of a mapped type count; ``deleted`` ones are
    retractions (unless the same value is live in the event). Raises
    FormatError if the file is not a MISP event.
    """
    stream = EventStream()
    stream.feed(data)
    return stream.finish(now, reference)


class EventStream:
    """A MISP event file parsed as it downloads (ijson events, as ``stream``).

    The event's own fields are kept; each attribute is built and validated
    alone, and dropped at once unless it can count (``to_ids`` and a mapped
    type), so junk attributes cost no memory. What is kept is O(attributes
    that count): an event of a million real IoCs is still a million sightings.
    The caps of ``stream`` hold: an attribute or token over MAX_ITEM bytes,
    or nesting over MAX_DEPTH, fails the event.
    """

    _META = {"Event.uuid": "uuid", "Event.info": "info", "Event.threat_level_id": "threat_level_id",
             "Event.timestamp": "timestamp"}
    _ATTRIBUTES = ("Event.Attribute.item", "Event.Object.item.Attribute.item")
    # Where only an array may be (as the typed whole-file decode required).
    _LISTS = ("Event.Tag", "Event.Attribute", "Event.Object", "Event.Object.item.Attribute")

    def __init__(self) -> None:
        self.events = ijson.sendable_list()
        self.coro = ijson.parse_coro(self.events, use_float=True)
        self.meta: dict[str, Any] = {}
        self.tags: list[Any] = []
        self.kept: list[MispAttribute] = []
        self.builder: ijson.ObjectBuilder | None = None
        self.depth = self.open = self.cost = self.quiet = 0
        self.has_event = False

    def feed(self, data: bytes) -> None:
        for i in range(0, len(data), SLICE):
            piece = data[i : i + SLICE]
            try:
                self.coro.send(piece)
            except ijson.JSONError as exc:
                raise FormatError(f"bad event JSON: {exc}") from None
            self.quiet = 0 if self.events else self.quiet + len(piece)
            if self.quiet > MAX_ITEM:
                raise FormatError(f"bad event JSON: a token is longer than {MAX_ITEM} bytes")
            self._walk()

    def finish(self, now: int, reference: str = "") -> tuple[Parsed, list[Sighting]]:
        try:
            self.coro.close()
        except ijson.JSONError as exc:
            raise FormatError(f"bad event JSON: {exc}") from None
        self._walk()
        if not self.has_event:
            raise FormatError("bad event JSON: no Event object")
        try:
            event = msgspec.convert({**self.meta, "Tag": self.tags}, type=MispEvent)
        except msgspec.ValidationError as exc:
            raise FormatError(f"bad event JSON: {exc}") from None
        return _map_event(event, self.kept, now, reference)

    def _walk(self) -> None:
        for prefix, ev, val in self.events:
            if ev in ("start_map", "start_array"):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise FormatError(f"bad event JSON: nested too deeply (more than {MAX_DEPTH} levels)")
            elif ev in ("end_map", "end_array"):
                self.depth -= 1
            if self.builder is not None:
                self._build(ev, val)
            elif prefix in self._ATTRIBUTES:
                self.builder, self.open, self.cost = ijson.ObjectBuilder(), 0, 0
                self._build(ev, val)
            elif prefix in self._META:
                self.meta[self._META[prefix]] = val
            elif prefix == "Event.Tag.item.name":
                self.tags.append({"name": val})
            elif prefix in self._LISTS and ev not in ("start_array", "end_array"):
                raise FormatError(f"bad event JSON: {prefix} is not an array")
            elif prefix == "Event" and ev not in ("map_key", "end_map"):
                if ev != "start_map":
                    raise FormatError("bad event JSON: Event is not an object")
                self.has_event = True
            elif prefix == "" and ev not in ("start_map", "map_key", "end_map"):
                raise FormatError("bad event JSON: not an object")
        del self.events[:]

    def _build(self, ev: str, val: Any) -> None:
        assert self.builder is not None
        self.builder.event(ev, val)
        self.cost += len(val) + 3 if isinstance(val, str) else 2
        if self.cost > MAX_ITEM:
            raise FormatError(f"bad event JSON: an attribute is larger than {MAX_ITEM} bytes")
        if ev in ("start_map", "start_array"):
            self.open += 1
        elif ev in ("end_map", "end_array"):
            self.open -= 1
        if self.open:
            return
        raw, self.builder = self.builder.value, None
        try:
            a = msgspec.convert(raw, type=MispAttribute)
        except msgspec.ValidationError as exc:
            raise FormatError(f"bad event JSON: attribute: {exc}") from None
        if a.to_ids and a.type in MISP_TYPES:
            self.kept.append(a)


def _map_event(event: MispEvent, attributes: list[MispAttribute], now: int,
               reference: str) -> tuple[Parsed, list[Sighting]]:
    severity = _MISP_SEVERITY.get(str(event.threat_level_id), "unknown")
    event_tags = [t.name for t in event.Tag if t.name]
    live: dict[tuple[str, str], Sighting] = {}
    dead: dict[tuple[str, str], Sighting] = {}
    rejected: list[Rejected] = []
    for a in attributes:
        parts = MISP_TYPES.get(a.type)
        if not a.to_ids or parts is None:
            continue
        pieces = a.value.split("|") if "|" in a.type else [a.value]
        tags = tuple(dict.fromkeys(event_tags + [t.name for t in a.Tag if t.name]))
        ts = _epoch(a.timestamp)
        for type_, i in parts:
            where = f"event {event.uuid}: {a.type} attribute"
            if i >= len(pieces):
                rejected.append(Rejected(where=where, reason=f"bad composite value {show(a.value)}"))
                continue
            v = pieces[i].strip()
            if type_ == "ip":
                v = strip_port(v)
            try:
                s = fmt.build(type_cell=None, value=v, severity_cell=None,
                              default_type=None if type_ == "ip" else type_, default_severity=severity, now=now,
                              tags=tags, comments=a.comment or event.info, reference=reference,
                              first_seen=fmt.field_time("first_seen", a.first_seen) or ts,
                              last_seen=fmt.field_time("last_seen", a.last_seen), retracted=a.deleted)
                if type_ == "ip" and s.type not in IP_TYPES:
                    raise BadRecord(f"not an IP address: {show(v)}")
            except BadRecord as exc:
                rejected.append(Rejected(where=where, reason=str(exc)))
                continue
            key = (s.type, s.value)
            (dead if a.deleted else live)[key] = s
    retracted = [s for k, s in dead.items() if k not in live]
    return (list(live.values()), rejected), retracted


# --------------------------------------------------------------------------- fetching


def manifest_url(url: str) -> str:
    base = url.rstrip("/").removesuffix("/manifest.json")
    return base + "/manifest.json"


async def fetch_event(adapter: FeedAdapter, url: str, uuid: str,
                      now: int) -> tuple[Parsed, list[Sighting]] | str:
    """An event file parsed as it downloads, or the reason it was skipped (4xx, too large, not an event)."""
    try:
        async with adapter.open(url, None, f"feed event {uuid}") as body:
            if body is None:
                return "HTTP 304 without a conditional request"
            stream = EventStream()
            async with aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    await trio.to_thread.run_sync(stream.feed, chunk)
            return await trio.to_thread.run_sync(stream.finish, now, url)
    except (UpstreamDataError, FormatError) as exc:
        return str(exc)


async def pull(adapter: FeedAdapter, ctx: PullContext) -> AsyncIterator[Batch]:
    """The manifest (conditional GET), then the events that changed (all with snapshot).

    Incremental mode keeps each event's timestamp in the cursor: an event is
    fetched when it is new or its timestamp differs. An event that fails is
    counted as rejected and retried next pull (its timestamp is not kept,
    the manifest's validators are dropped), and it withholds snapshot_end.
    """
    cfg = adapter.config
    snapshot = cfg.effective_snapshot
    sub = ctx.sub_checkpoint if isinstance(ctx.sub_checkpoint, dict) else None
    resuming = sub is not None and not sub.get("done")
    murl = manifest_url(cfg.url)
    async with adapter.open(murl, adapter.conditional(ctx, resuming), adapter.what) as body:
        if body is None:
            return
        data = await body.read()
        validators = body.validators
    try:
        manifest = parse_manifest(data)
    except FormatError as exc:
        raise UpstreamDataError(f"{adapter.what}: {exc}") from None
    version = hashlib.sha256(data).hexdigest()[:32]
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
        got = await fetch_event(adapter, url, uuid, ctx.now)
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
            yield Batch(sightings=out, rejected=rejected, sub_checkpoint={"validator": version, "pos": i + 1},
                        cursor=None if snapshot else {"events": dict(done)})
            out, rejected = [], []
    retract = {(s.type, s.value): s for s in dead if (s.type, s.value) not in live}
    cursor: dict[str, Any] = {**validators, "fetched_at": ctx.now} if complete else {}
    if not snapshot:
        cursor["events"] = done
    yield Batch(sightings=out + list(retract.values()), rejected=rejected, cursor=cursor,
                snapshot_end=snapshot and complete, sub_checkpoint={"done": True})
