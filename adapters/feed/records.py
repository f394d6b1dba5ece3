"""Record-level mapping shared by every ``feed`` format: one record in, sightings out.

No I/O here. ``Spec`` is the resolved parsing configuration (preset and
defaults applied); ``map_record`` turns one record (a text line, CSV row, JSON
object or MISP attribute value) into sightings, raising ``BadRecord`` when the
record as a whole is unusable. ``FormatError`` is for a whole document that
cannot be parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ctd.adapters.file import formats as fmt
from ctd.adapters.file.formats import BadRecord, show
from ctd.model import INDICATOR_TYPES, Rejected, Sighting

Column = str | int
Lines = list[tuple[int, bytes]]
Parsed = tuple[list[Sighting], list[Rejected]]

ROLES = ("value", "type", "severity", "tags", "first_seen", "last_seen", "comments", "reference", "reputation")
IP_TYPES = ("ipv4", "ipv6", "cidr4", "cidr6")


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


def strip_port(v: str) -> str:
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
        raise BadRecord(f"bad reputation {show(cell)}") from None
    return max(1, min(10, int(n * 10 / scale + 0.5)))


def map_record(get: Callable[[Column], Any], spec: Spec, now: int) -> tuple[list[Sighting], list[str]]:
    """One record (row or object) -> its sightings (one per value column) and per-value reasons.

    Raises ``BadRecord`` when the record as a whole is unusable.
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
            raise BadRecord(f"unsupported type {show(type_cell)}")
        type_ = mapped
    tags: list[str] = []
    for col in f.get("tags", ()):
        raw = get(col)
        if isinstance(raw, list):
            tags.extend(t for t in (_cell(x, nulls) for x in raw) if t)
        elif (c := _cell(raw, nulls)) is not None:
            tags.extend(fmt.split_tags(c, spec.tag_separator))
    meta: dict[str, Any] = {
        "severity_cell": first("severity"),
        "tags": tuple(dict.fromkeys(tags)),
        "comments": first("comments") or "",
        "reference": first("reference") or "",
        "first_seen": fmt.field_time("first_seen", first("first_seen")),
        "last_seen": fmt.field_time("last_seen", first("last_seen")),
        "reputation": _reputation(first("reputation"), spec.reputation_scale),
    }
    values = [v for v in (_cell(get(col), nulls) for col in f["value"]) if v is not None]
    if not values:
        raise BadRecord("empty value")
    out: list[Sighting] = []
    reasons: list[str] = []
    for v in values:
        want = type_
        if want in ("ip", "ipv4", "ipv6"):
            v = strip_port(v)
        try:
            s = fmt.build(
                type_cell=None,
                value=v,
                default_type=None if want == "ip" else want,
                default_severity=spec.severity,
                now=now,
                **meta,
            )
        except BadRecord as exc:
            reasons.append(str(exc))
            continue
        if want == "ip" and s.type not in IP_TYPES:
            reasons.append(f"not an IP address: {show(v)}")
            continue
        out.append(s)
    return out, reasons
