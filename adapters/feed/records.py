"""Record-level mapping shared by every ``feed`` format: one record in, sightings out.

No I/O here. ``Spec`` is the resolved parsing configuration (preset and
defaults applied); ``map_record`` turns one record (a text line, CSV row, JSON
object or MISP attribute value) into sightings and the record's issues,
raising ``BadRecord`` when the record as a whole is unusable. An optional
field that cannot be read (a date, a reputation, a severity) never costs the
record: the field is dropped and the issue is a field warning. ``FormatError``
is for a whole document that cannot be parsed.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import msgspec

from ctd.adapters.file import formats as fmt
from ctd.adapters.file.formats import BadRecord, show
from ctd.model import (
    FIELD,
    INDICATOR_TYPES,
    MALFORMED,
    SEVERITIES,
    UNSUPPORTED_TYPE,
    Rejected,
    Sighting,
    parse_time,
)

# Bump when ctd reads a record differently (a type it now maps, a format it now accepts): a feed's
# cursor from another version makes the next pull read everything again (MISP feeds: every event).
# 1: until issue 12 (no version in the cursor); 2: issue 12's formats, presets and field warnings.
PARSER_VERSION = 2

Column = str | int
Lines = list[tuple[int, bytes]]
Parsed = tuple[list[Sighting], list[Rejected]]
Issue = tuple[str, str]  # (reason class, reason) of one record

ROLES = ("value", "type", "severity", "tags", "first_seen", "last_seen", "comments", "reference", "reputation")
IP_TYPES = ("ipv4", "ipv6", "cidr4", "cidr6")
_SEVERITIES = frozenset(SEVERITIES)


class FormatError(ValueError):
    """The document as a whole cannot be parsed (the message says why)."""


def first_line(exc: BaseException) -> str:
    """A parser's message on one line (yajl's adds a second line pointing at the spot)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:300] if lines else type(exc).__name__


class UnsupportedType(BadRecord):
    """A well-formed record of a type ctd does not hold (counted unsupported, not invalid)."""

    kind = UNSUPPORTED_TYPE


def rejected(where: str, exc: BadRecord) -> Rejected:
    """The ``Rejected`` for a record refused with ``exc`` (its reason class from the exception)."""
    return Rejected(where=where, reason=str(exc), kind=getattr(exc, "kind", MALFORMED))


def issues_at(where: str, issues: list[Issue]) -> list[Rejected]:
    return [Rejected(where=where, reason=reason, kind=kind) for kind, reason in issues]


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
    # Columns a preset names that an export variant may lack (URLhaus per-country has no tags).
    optional: frozenset[Column] = frozenset()
    # The value built from several columns: literal text and column references, in order.
    template: tuple[tuple[str, Column | None], ...] = ()
    time_formats: dict[str, str] = {}  # role -> strptime format ("first_seen": "%d-%m-%Y")
    column_count: int | None = None  # csv: a row with more cells has separators inside ...
    overflow_column: int | None = None  # ... this column, which takes the extra cells back


def parse_template(template: str) -> tuple[tuple[str, Column | None], ...]:
    """``"{Start}/{Netblock}"`` -> ((``""``, "Start"), (``"/"``, "Netblock")); ``{2}`` is column 2 (ValueError)."""
    parts: list[tuple[str, Column | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"value_template {template!r}: {exc}") from None
    for literal, name, spec, conv in parsed:
        if spec or conv:
            raise ValueError(f"value_template {template!r}: no ':' or '!' in a column reference")
        if name == "":
            raise ValueError(f"value_template {template!r}: an empty {{}} names no column")
        col: Column | None = int(name) if name is not None and name.isdigit() else name
        parts.append((literal, col))
    if not any(c is not None for _, c in parts):
        raise ValueError(f"value_template {template!r} names no column")
    return tuple(parts)


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


def field_time(role: str, cell: str | None, time_format: str | None, issues: list[Issue]) -> int | None:
    """An optional time field: its epoch seconds, or None with a field warning when it cannot be read."""
    if cell is None:
        return None
    try:
        return parse_time(cell, time_format)
    except (ValueError, OverflowError):
        want = f" as {time_format!r}" if time_format else ""
        issues.append((FIELD, f"bad {role} {show(cell)}{want} (dropped)"))
        return None


def _reputation(cell: str | None, scale: int, issues: list[Issue]) -> int | None:
    if cell is None:
        return None
    try:
        n = float(cell)
        if n != n:  # NaN
            raise ValueError
    except ValueError:
        issues.append((FIELD, f"bad reputation {show(cell)} (dropped)"))
        return None
    return max(1, min(10, int(n * 10 / scale + 0.5)))


def _severity(cell: str | None, issues: list[Issue]) -> str | None:
    if cell is None or cell.strip().lower() in _SEVERITIES:
        return cell
    issues.append((FIELD, f"unknown severity {show(cell)} (dropped)"))
    return None


def _values(get: Callable[[Column], Any], spec: Spec) -> list[str]:
    nulls = spec.null_values
    if spec.template:
        out = []
        for literal, col in spec.template:
            out.append(literal)
            if col is not None:
                c = _cell(get(col), nulls)
                if c is None:
                    return []  # a part is missing: there is no value
                out.append(c)
        return ["".join(out)]
    return [v for v in (_cell(get(col), nulls) for col in spec.fields["value"]) if v is not None]


def map_record(get: Callable[[Column], Any], spec: Spec, now: int) -> tuple[list[Sighting], list[Issue]]:
    """One record (row or object) -> its sightings (one per value column) and its issues.

    Issues are per value (a value rejected, ``MALFORMED``) or per field (a field
    dropped, ``FIELD``). Raises ``BadRecord`` (``UnsupportedType`` for a type
    ctd does not hold) when the record as a whole is unusable.
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
            raise UnsupportedType(f"unsupported type {show(type_cell)}")
        type_ = mapped
    values = _values(get, spec)
    if not values:
        raise BadRecord("empty value")
    issues: list[Issue] = []
    tags: list[str] = []
    for col in f.get("tags", ()):
        raw = get(col)
        if isinstance(raw, list):
            tags.extend(t for t in (_cell(x, nulls) for x in raw) if t)
        elif (c := _cell(raw, nulls)) is not None:
            tags.extend(fmt.split_tags(c, spec.tag_separator))
    formats = spec.time_formats
    meta: dict[str, Any] = {
        "severity_cell": _severity(first("severity"), issues),
        "tags": tuple(dict.fromkeys(tags)),
        "comments": first("comments") or "",
        "reference": first("reference") or "",
        "first_seen": field_time("first_seen", first("first_seen"), formats.get("first_seen"), issues),
        "last_seen": field_time("last_seen", first("last_seen"), formats.get("last_seen"), issues),
        "reputation": _reputation(first("reputation"), spec.reputation_scale, issues),
    }
    out: list[Sighting] = []
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
            issues.append((MALFORMED, str(exc)))
            continue
        if want == "ip" and s.type not in IP_TYPES:
            issues.append((MALFORMED, f"not an IP address: {show(v)}"))
            continue
        out.append(s)
    if not out:  # the record is gone: what its other fields had is moot
        issues = [i for i in issues if i[0] != FIELD]
    return out, issues
