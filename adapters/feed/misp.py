"""The MISP feed format for the ``feed`` adapter: a ``manifest.json`` and one JSON file per event.

Pure (bytes in, sightings and rejections out; the adapter fetches): only
``to_ids`` attributes of a type in the misp adapter's type table count (the
same table the REST ``misp`` adapter reads attributes with), and ``deleted``
ones are retractions; event files are parsed as they download
(``EventStream``), and attributes that cannot count are dropped as they are read.
"""

from __future__ import annotations

from typing import Any

import ijson
import msgspec

from ctd.adapters import jsonstream
from ctd.adapters.feed.records import (
    IP_TYPES,
    FormatError,
    Issue,
    Parsed,
    field_time,
    first_line,
    issues_at,
    strip_port,
)
from ctd.adapters.feed.stream import MAX_DEPTH, MAX_ITEM, SLICE
from ctd.adapters.file import formats as fmt
from ctd.adapters.file.formats import BadRecord, show
from ctd.adapters.misp.mapping import MISP_TYPES, attribute_values
from ctd.model import Rejected, Sighting

# --------------------------------------------------------------------------- mapping

__all__ = [
    "MAX_MANIFEST_EVENTS",
    "MISP_TYPES",
    "EventStream",
    "ManifestStream",
    "manifest_url",
    "misp_event",
    "parse_manifest",
]

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


# Events a manifest may list. The feed's cursor keeps each one's timestamp, and each is a GET:
# a manifest listing more is refused whole, not read into memory (a 100 MiB manifest of tiny
# entries would be millions of them).
MAX_MANIFEST_EVENTS = 100_000


class ManifestStream:
    """``manifest.json`` parsed as it downloads: event uuid -> timestamp, at most MAX_MANIFEST_EVENTS.

    Each entry is read alone (the caps of ``ctd.adapters.jsonstream`` hold) and
    only its timestamp is kept, so memory is O(events), never O(bytes).
    """

    def __init__(self) -> None:
        self.stream = jsonstream.JsonStream((), pairs=True)
        self.events: dict[str, int] = {}
        self.started = False

    def feed(self, data: bytes) -> None:
        if not self.started and (head := data.lstrip()):
            self.started = True
            if not head.startswith(b"{"):
                raise FormatError("bad manifest.json: not a JSON object")
        try:
            self._take(self.stream.feed(data))
        except jsonstream.JsonError as exc:
            raise FormatError(f"bad manifest.json: {exc}") from None

    def finish(self) -> dict[str, int]:
        try:
            self._take(self.stream.finish())
        except jsonstream.JsonError as exc:
            raise FormatError(f"bad manifest.json: {exc}") from None
        if not self.started:
            raise FormatError("bad manifest.json: empty")
        return self.events

    def _take(self, pairs: list[tuple[str, Any]]) -> None:
        for uuid, entry in pairs:
            if not isinstance(entry, dict):
                raise FormatError(f"bad manifest.json: event {show(uuid)}: not an object")
            ts = entry.get("timestamp", 0)
            try:
                if type(ts) not in (int, str):
                    raise ValueError
                self.events[uuid] = int(ts)
            except ValueError:
                raise FormatError(f"manifest.json: event {show(uuid)}: bad timestamp {show(str(ts))}") from None
            if len(self.events) > MAX_MANIFEST_EVENTS:
                raise FormatError(f"manifest.json lists more than {MAX_MANIFEST_EVENTS} events")


def parse_manifest(data: bytes) -> dict[str, int]:
    """``manifest.json`` -> event uuid -> event timestamp (raises FormatError)."""
    stream = ManifestStream()
    stream.feed(data)
    return stream.finish()


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

    _META = {
        "Event.uuid": "uuid",
        "Event.info": "info",
        "Event.threat_level_id": "threat_level_id",
        "Event.timestamp": "timestamp",
    }
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
                raise FormatError(f"bad event JSON: {first_line(exc)}") from None
            self.quiet = 0 if self.events else self.quiet + len(piece)
            if self.quiet > MAX_ITEM:
                raise FormatError(f"bad event JSON: a token is longer than {MAX_ITEM} bytes")
            self._walk()

    def finish(self, now: int, reference: str = "") -> tuple[Parsed, list[Sighting]]:
        try:
            self.coro.close()
        except ijson.JSONError as exc:
            raise FormatError(f"bad event JSON: {first_line(exc)}") from None
        self._walk()
        if not self.has_event:
            raise FormatError("bad event JSON: no Event object")
        try:
            event = msgspec.convert({**self.meta, "Tag": self.tags}, type=MispEvent)
        except msgspec.ValidationError as exc:
            raise FormatError(f"bad event JSON: {first_line(exc)}") from None
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


def _map_event(
    event: MispEvent, attributes: list[MispAttribute], now: int, reference: str
) -> tuple[Parsed, list[Sighting]]:
    severity = _MISP_SEVERITY.get(str(event.threat_level_id), "unknown")
    event_tags = [t.name for t in event.Tag if t.name]
    live: dict[tuple[str, str], Sighting] = {}
    dead: dict[tuple[str, str], Sighting] = {}
    rejected: list[Rejected] = []
    for a in attributes:
        if not a.to_ids:
            continue
        tags = tuple(dict.fromkeys(event_tags + [t.name for t in a.Tag if t.name]))
        ts = _epoch(a.timestamp)
        where = f"event {event.uuid}: {a.type} attribute"
        issues: list[Issue] = []
        first_seen = field_time("first_seen", a.first_seen or None, None, issues) or ts
        last_seen = field_time("last_seen", a.last_seen or None, None, issues)
        kept = False
        for type_, raw in attribute_values(a.type, a.value):
            v = raw.strip()
            if type_ is None:  # an IP address or network; a feed may write one with its port
                v = strip_port(v)
            try:
                s = fmt.build(
                    type_cell=None,
                    value=v,
                    severity_cell=None,
                    default_type=type_,
                    default_severity=severity,
                    now=now,
                    tags=tags,
                    comments=a.comment or event.info,
                    reference=reference,
                    first_seen=first_seen,
                    last_seen=last_seen,
                    retracted=a.deleted,
                )
                if type_ is None and s.type not in IP_TYPES:
                    raise BadRecord(f"not an IP address: {show(v)}")
            except BadRecord as exc:
                rejected.append(Rejected(where=where, reason=str(exc)))
                continue
            kept = True
            key = (s.type, s.value)
            (dead if a.deleted else live)[key] = s
        if kept:  # a dropped field of an attribute that was rejected anyway is moot
            rejected.extend(issues_at(where, issues))
    retracted = [s for k, s in dead.items() if k not in live]
    return (list(live.values()), rejected), retracted


def manifest_url(url: str) -> str:
    """The feed's ``manifest.json`` URL from its configured base URL (either is accepted)."""
    base = url.rstrip("/").removesuffix("/manifest.json")
    return base + "/manifest.json"
