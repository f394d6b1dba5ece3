"""Pure parsing for the ``feed`` adapter: bytes in, sightings and rejections out.

No I/O here. ``Spec`` is the resolved parsing configuration (preset and
defaults applied). Text and CSV are parsed as a stream of numbered lines
(``LineSplitter`` cuts the downloaded chunks), so a large feed is parsed while
it downloads; JSON documents and MISP events are parsed whole. A record that
cannot become a sighting never stops the parse: it becomes a ``Rejected`` with
its position, and the rest goes on. Only a problem that makes the whole
document unusable (no header, undecodable JSON) raises ``FormatError``.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from ctd.adapters.file_formats import _BadRecord, _build, _show, _split_tags, _strip_inline_comment, _time
from ctd.model import INDICATOR_TYPES, Rejected, Sighting

Column = str | int
Lines = list[tuple[int, bytes]]
Parsed = tuple[list[Sighting], list[Rejected]]

ROLES = ("value", "type", "severity", "tags", "first_seen", "last_seen", "comments", "reference", "reputation")
IP_TYPES = ("ipv4", "ipv6", "cidr4", "cidr6")
MAX_LINE = 1 << 20  # a "line" longer than this is not a feed line: stop instead of buffering it


class FormatError(ValueError):
    """The document as a whole cannot be parsed (the message says why)."""


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved parsing keys; ``fields`` maps a role to its columns (csv) or dotted paths (json)."""

    format: str
    type: str | None = None  # a ctd type, "ip" (any IP or CIDR), or None (auto-detect)
    severity: str = "unknown"
    comment_prefix: str = "#"
    tag_separator: str = ";"
    null_values: frozenset[str] = frozenset()
    type_map: dict[str, str] = {}  # the feed's type names -> ctd type, "ip", or "" (skip)
    reputation_scale: int = 10
    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    skip_initial_space: bool = False
    json_path: tuple[str, ...] = ()
    fields: dict[str, tuple[Column, ...]] = {}


# --------------------------------------------------------------------------- records


def _cell(raw: Any, nulls: frozenset[str]) -> str | None:
    if raw is None or isinstance(raw, (dict, list, bool)):
        return None
    s = str(raw).strip()
    return None if not s or s in nulls else s


def _strip_port(v: str) -> str:
    """``192.0.2.1:443`` -> ``192.0.2.1``; ``[2001:db8::1]:443`` -> ``2001:db8::1``."""
    if v.startswith("[") and "]" in v:
        return v[1 : v.index("]")]
    head, sep, port = v.rpartition(":")
    if sep and port.isdigit() and head.count(":") == 0:
        return head
    return v


def _reputation(cell: str | None, scale: int) -> int | None:
    if cell is None:
        return None
    try:
        n = float(cell)
    except ValueError:
        raise _BadRecord(f"bad reputation {_show(cell)}") from None
    return max(1, min(10, int(n * 10 / scale + 0.5)))


def map_record(get: Callable[[Column], Any], spec: Spec, now: int) -> tuple[list[Sighting], list[str]]:
    """One record (row or object) -> its sightings (one per value column) and per-value reasons.

    Raises ``_BadRecord`` when the record as a whole is unusable.
    """
    f = spec.fields
    nulls = spec.null_values

    def first(role: str) -> str | None:
        for col in f.get(role, ()):
            c = _cell(get(col), nulls)
            if c is not None:
                return c
        return None

    type_ = spec.type
    type_cell = first("type")
    if type_cell is not None:
        mapped = spec.type_map.get(type_cell, spec.type_map.get(type_cell.lower(), type_cell.lower()))
        if mapped == "":
            return [], []  # a type the feed has and the operator chose to skip
        if mapped not in INDICATOR_TYPES and mapped != "ip":
            raise _BadRecord(f"unsupported type {_show(type_cell)}")
        type_ = mapped
    tags: list[str] = []
    for col in f.get("tags", ()):
        raw = get(col)
        if isinstance(raw, list):
            tags.extend(t for t in (_cell(x, nulls) for x in raw) if t)
        elif (c := _cell(raw, nulls)) is not None:
            tags.extend(_split_tags(c, spec.tag_separator))
    meta = {
        "severity_cell": first("severity"),
        "tags": tuple(dict.fromkeys(tags)),
        "comments": first("comments") or "",
        "reference": first("reference") or "",
        "first_seen": _time("first_seen", first("first_seen")),
        "last_seen": _time("last_seen", first("last_seen")),
        "reputation": _reputation(first("reputation"), spec.reputation_scale),
    }
    values = [v for v in (_cell(get(col), nulls) for col in f["value"]) if v is not None]
    if not values:
        raise _BadRecord("empty value")
    out: list[Sighting] = []
    reasons: list[str] = []
    for v in values:
        want = type_
        if want in ("ip", "ipv4", "ipv6"):
            v = _strip_port(v)
        try:
            s = _build(type_cell=None, value=v, default_type=None if want == "ip" else want,
                       default_severity=spec.severity, now=now, **meta)
        except _BadRecord as exc:
            reasons.append(str(exc))
            continue
        if want == "ip" and s.type not in IP_TYPES:
            reasons.append(f"not an IP address: {_show(v)}")
            continue
        out.append(s)
    return out, reasons


# --------------------------------------------------------------------------- bytes


class Inflate:
    """A gzip (or zlib) stream decoded piecewise, so a size limit holds before memory is spent.

    Concatenated gzip members are one stream (RFC 1952). ``finish`` raises if
    the stream stopped before its end: a truncated download is an error, never
    a shorter feed.
    """

    PIECE = 1 << 20

    def __init__(self, wbits: int = 31, name: str = "gzip") -> None:
        self.wbits = wbits
        self.name = name
        self.d = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self.d.decompress(data, self.PIECE)
            except zlib.error as exc:
                raise FormatError(f"corrupt {self.name} data: {exc}") from None
            if out:
                yield out
            data = self.d.unconsumed_tail
            if not data and self.d.eof and self.d.unused_data:
                data = self.d.unused_data  # the next member
                self.d = zlib.decompressobj(self.wbits)

    def finish(self) -> None:
        if not self.d.eof:
            raise FormatError(f"truncated {self.name} stream")


# --------------------------------------------------------------------------- lines


class LineSplitter:
    """Cut a byte stream into numbered lines (without the line end); a UTF-8 BOM is dropped."""

    def __init__(self) -> None:
        self.buf = b""
        self.lineno = 0
        self.started = False

    def feed(self, data: bytes) -> Lines:
        if not self.started and data:
            self.started = True
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
        buf = self.buf + data if self.buf else data
        parts = buf.split(b"\n")
        self.buf = parts.pop()
        if len(self.buf) > MAX_LINE:
            raise FormatError(f"line {self.lineno + len(parts) + 1} is longer than {MAX_LINE} bytes")
        out: Lines = []
        n = self.lineno
        for p in parts:
            n += 1
            out.append((n, p[:-1] if p.endswith(b"\r") else p))
        self.lineno = n
        return out

    def finish(self) -> Lines:
        """The last line if the stream did not end with a newline (only call on a complete stream)."""
        if not self.buf:
            return []
        self.lineno += 1
        last, self.buf = self.buf.rstrip(b"\r"), b""
        return [(self.lineno, last)]


class TextStream:
    """One value per line; comment and blank lines skipped, `` # note`` after a value cut off."""

    def __init__(self, spec: Spec, now: int) -> None:
        self.prefix = spec.comment_prefix.encode()
        self.spec = msgspec.structs.replace(spec, fields={"value": (0,)})
        self.now = now

    def feed(self, lines: Lines, skip_to: int = 0) -> Parsed:
        prefix = self.prefix
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        for n, raw in lines:
            s = raw.strip()
            if n <= skip_to or not s or (prefix and s.startswith(prefix)):
                continue
            if prefix and prefix in s:
                s = _strip_inline_comment(s, prefix)
            where = f"line {n}"
            try:
                text = s.decode()
                sightings, reasons = map_record(lambda _c: text, self.spec, self.now)
            except UnicodeDecodeError:
                rejected.append(Rejected(where=where, reason="not valid UTF-8"))
                continue
            except _BadRecord as exc:
                rejected.append(Rejected(where=where, reason=str(exc)))
                continue
            out.extend(sightings)
            rejected.extend(Rejected(where=where, reason=r) for r in reasons)
        return out, rejected


class CsvStream:
    """CSV rows by header name or 0-based column number.

    With ``header``, the header is the first non-comment line, unless that line
    lacks the named columns and the last comment line before it has them
    (abuse.ch exports: ``# id,dateadded,url,...``): then the comment is the
    header and the first line is already data.
    """

    def __init__(self, spec: Spec, now: int) -> None:
        self.spec = spec
        self.now = now
        self.prefix = spec.comment_prefix.encode()
        self.dialect = {"delimiter": spec.delimiter, "quotechar": spec.quotechar,
                        "skipinitialspace": spec.skip_initial_space, "strict": False}
        self.last_comment: bytes | None = None
        self.index: dict[Column, int] | None = None if spec.header else {}
        self.header: list[str] | None = None

    def _row(self, raw: bytes) -> list[str]:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise FormatError("header row is not valid UTF-8") from None
        rows = list(csv.reader([text], **self.dialect))
        return [c.strip().strip('"').strip() for c in rows[0]] if rows else []

    def _resolve(self, header: list[str]) -> dict[Column, int] | None:
        folded: dict[str, int] = {}
        for i, name in enumerate(header):
            folded.setdefault(name.lower(), i)
        index: dict[Column, int] = {}
        for cols in self.spec.fields.values():
            for c in cols:
                if isinstance(c, str):
                    if c.lower() not in folded:
                        return None
                    index[c] = folded[c.lower()]
        return index

    def _take_header(self, raw: bytes) -> bool:
        """Settle the header at the first non-comment line; True if that line was the header."""
        row = self._row(raw)
        index = self._resolve(row)
        if index is not None:
            self.index, self.header = index, row
            return True
        if self.last_comment is not None:
            crow = self._row(self.last_comment)
            if (cindex := self._resolve(crow)) is not None:
                self.index, self.header = cindex, crow
                return False
        wanted = sorted({c for cols in self.spec.fields.values() for c in cols if isinstance(c, str)})
        raise FormatError(f"no header with the columns {wanted!r} (first line has {row!r})")

    def feed(self, lines: Lines, skip_to: int = 0) -> Parsed:
        prefix = self.prefix
        texts: list[str] = []
        numbers: list[int] = []
        rejected: list[Rejected] = []
        for lineno, raw in lines:
            s = raw.strip()
            if not s:
                continue
            if prefix and s.startswith(prefix):
                if self.index is None:
                    body = s[len(prefix):].strip()
                    if body:
                        self.last_comment = body
                continue
            if self.index is None and self._take_header(raw):
                continue
            if lineno <= skip_to:
                continue
            try:
                texts.append(raw.decode())
                numbers.append(lineno)
            except UnicodeDecodeError:
                rejected.append(Rejected(where=f"line {lineno}", reason="not valid UTF-8"))
        out: list[Sighting] = []
        reader = csv.reader(texts, **self.dialect)
        consumed = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rejected.append(Rejected(where=f"line {numbers[consumed]}", reason=f"bad CSV: {exc}"))
                consumed = reader.line_num
                continue
            where = f"line {numbers[consumed]}"
            consumed = reader.line_num
            self._map(row, where, out, rejected)
        return out, rejected

    def _map(self, row: list[str], where: str, out: list[Sighting], rejected: list[Rejected]) -> None:
        index = self.index or {}
        cols = [index.get(c, c) for c in self.spec.fields["value"]]
        if all(isinstance(i, int) and i >= len(row) for i in cols):
            rejected.append(Rejected(where=where, reason=f"row has {len(row)} columns, no value column"))
            return

        def get(col: Column) -> Any:
            i = index.get(col, col)
            return row[i] if isinstance(i, int) and i < len(row) else None

        try:
            sightings, reasons = map_record(get, self.spec, self.now)
        except _BadRecord as exc:
            rejected.append(Rejected(where=where, reason=str(exc)))
            return
        out.extend(sightings)
        rejected.extend(Rejected(where=where, reason=r) for r in reasons)


# --------------------------------------------------------------------------- json


def json_items(data: bytes, spec: Spec) -> list[Any]:
    """The list at ``json_path`` in a JSON document (raises FormatError)."""
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise FormatError(f"bad JSON: {exc}") from None
    node = doc
    for i, key in enumerate(spec.json_path):
        if not isinstance(node, dict) or key not in node:
            raise FormatError(f"json_path: no key {'.'.join(spec.json_path[: i + 1])!r}")
        node = node[key]
    if isinstance(node, dict) and not spec.json_path:
        node = list(node.values())  # a top-level object keyed by id (ThreatFox's JSON export)
    if not isinstance(node, list):
        raise FormatError(f"json_path {'.'.join(spec.json_path) or '(document)'!r} is not a list")
    return node


def _dotted(obj: Any, path: Column) -> Any:
    if isinstance(path, int):
        return obj[path] if isinstance(obj, list) and path < len(obj) else None
    for key in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def json_records(items: list[Any], start: int, spec: Spec, now: int) -> Parsed:
    """Map ``items`` (objects, or bare strings taken as values); ``start`` numbers them."""
    out: list[Sighting] = []
    rejected: list[Rejected] = []
    bare = Spec(**{**msgspec.structs.asdict(spec), "fields": {"value": (0,)}})
    for n, item in enumerate(items, start):
        where = f"item {n}"
        if isinstance(item, dict):
            obj, s = item, spec
        elif isinstance(item, str):
            obj, s = [item], bare
        else:
            rejected.append(Rejected(where=where, reason=f"not an object: {_show(str(item))}"))
            continue
        try:
            sightings, reasons = map_record(lambda p: _dotted(obj, p), s, now)
        except _BadRecord as exc:
            rejected.append(Rejected(where=where, reason=str(exc)))
            continue
        out.extend(sightings)
        rejected.extend(Rejected(where=where, reason=r) for r in reasons)
    return out, rejected


# --------------------------------------------------------------------------- MISP feed

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


class _EventFile(msgspec.Struct):
    Event: MispEvent


class ManifestEntry(msgspec.Struct):
    timestamp: int | str = 0
    info: str = ""


def parse_manifest(data: bytes) -> dict[str, int]:
    """``manifest.json`` -> event uuid -> event timestamp (raises FormatError)."""
    try:
        entries = msgspec.json.decode(data, type=dict[str, ManifestEntry])
    except msgspec.DecodeError as exc:
        raise FormatError(f"bad manifest.json: {exc}") from None
    out: dict[str, int] = {}
    for uuid, e in entries.items():
        try:
            out[uuid] = int(e.timestamp)
        except ValueError:
            raise FormatError(f"manifest.json: event {uuid}: bad timestamp {_show(str(e.timestamp))}") from None
    return out


def _epoch(raw: int | str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def misp_event(data: bytes, now: int, reference: str = "") -> tuple[Parsed, list[Sighting]]:
    """One event file -> ((live sightings, rejected), retracted sightings).

    Only ``to_ids`` attributes of a mapped type count; ``deleted`` ones are
    retractions (unless the same value is live in the event). Raises
    FormatError if the file is not a MISP event.
    """
    try:
        event = msgspec.json.decode(data, type=_EventFile).Event
    except msgspec.DecodeError as exc:
        raise FormatError(f"bad event JSON: {exc}") from None
    severity = _MISP_SEVERITY.get(str(event.threat_level_id), "unknown")
    event_tags = [t.name for t in event.Tag if t.name]
    attributes = list(event.Attribute)
    for obj in event.Object:
        attributes.extend(obj.Attribute)
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
                rejected.append(Rejected(where=where, reason=f"bad composite value {_show(a.value)}"))
                continue
            v = pieces[i].strip()
            if type_ == "ip":
                v = _strip_port(v)
            try:
                s = _build(type_cell=None, value=v, severity_cell=None,
                           default_type=None if type_ == "ip" else type_, default_severity=severity, now=now,
                           tags=tags, comments=a.comment or event.info, reference=reference,
                           first_seen=_time("first_seen", a.first_seen) or ts,
                           last_seen=_time("last_seen", a.last_seen), retracted=a.deleted)
                if type_ == "ip" and s.type not in IP_TYPES:
                    raise _BadRecord(f"not an IP address: {_show(v)}")
            except _BadRecord as exc:
                rejected.append(Rejected(where=where, reason=str(exc)))
                continue
            key = (s.type, s.value)
            (dead if a.deleted else live)[key] = s
    retracted = [s for k, s in dead.items() if k not in live]
    return (list(live.values()), rejected), retracted
