"""Pure record parsing for the file adapter: numbered byte lines in, sightings out.

No I/O here. Each ``*_parser`` factory returns a function taking the record
lines of one batch (``[(line_number, bytes), ...]``; blank and comment lines
already removed by the reader) and returning ``(sightings, rejected)``. A record
that cannot become a sighting is never an error: it becomes a ``Rejected`` with
its line number and the rest of the batch goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import msgspec

from ctd.model import INDICATOR_TYPES, SEVERITIES, InvalidIndicator, Rejected, Sighting, canonicalize, parse_time

Lines = list[tuple[int, bytes]]
Parsed = tuple[list[Sighting], list[Rejected]]
Parser = Callable[[Lines], Parsed]

_TYPES = frozenset(INDICATOR_TYPES)
_SEVERITIES = frozenset(SEVERITIES)
_SHOW = 80  # at most this many characters of a bad value go into a reason


class BadRecord(ValueError):
    """A record-level problem; the message is the rejection reason."""


def show(text: str) -> str:
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def strip_inline_comment(s: bytes, prefix: bytes) -> bytes:
    """Cut ``value  # comment``: the prefix counts only after a space or tab."""
    i = s.find(prefix)
    while i > 0:
        if s[i - 1] in b" \t":
            return s[:i].rstrip()
        i = s.find(prefix, i + 1)
    return s


def text_parser(*, type_: str | None, severity: str, comment_prefix: str, now: int) -> Parser:
    """One value per line; ``type_`` fixed or None to auto-detect each value."""
    prefix = comment_prefix.encode()
    canon = canonicalize

    def parse(lines: Lines) -> Parsed:
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        append = out.append
        for lineno, s in lines:
            if prefix and prefix in s:
                s = strip_inline_comment(s, prefix)
            try:
                value = s.decode()
                t, v = canon(type_, value)
            except UnicodeDecodeError:
                rejected.append(Rejected(where=f"line {lineno}", reason="not valid UTF-8"))
                continue
            except InvalidIndicator as exc:
                rejected.append(Rejected(where=f"line {lineno}", reason=f"{exc}: {show(value)}"))
                continue
            append(Sighting(type=t, value=v, first_seen=now, last_seen=now, severity=severity))
        return out, rejected

    return parse


# --------------------------------------------------------------------------- shared


def field_time(field: str, raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, (int, float)):
        return int(raw)
    try:
        return parse_time(raw)
    except (ValueError, OverflowError):
        raise BadRecord(f"bad {field} {show(raw)}") from None


def build(
    *,
    type_cell: str | None,
    value: str,
    severity_cell: str | None,
    default_type: str | None,
    default_severity: str,
    now: int,
    tags: tuple[str, ...] = (),
    comments: str = "",
    reference: str = "",
    first_seen: int | None = None,
    last_seen: int | None = None,
    expires_at: int | None = None,
    reputation: int | None = None,
    retracted: bool = False,
) -> Sighting:
    """Validate the record-level fields and canonicalize the value."""
    if not value:
        raise BadRecord("empty value")
    type_ = default_type
    if type_cell:
        type_ = type_cell.strip().lower()
        if type_ not in _TYPES:
            raise BadRecord(f"unknown type {show(type_cell)}")
    severity = default_severity
    if severity_cell:
        severity = severity_cell.strip().lower()
        if severity not in _SEVERITIES:
            raise BadRecord(f"unknown severity {show(severity_cell)}")
    try:
        t, v = canonicalize(type_, value)
    except InvalidIndicator as exc:
        raise BadRecord(f"{exc}: {show(value)}") from None
    # The file reports the value now: last_seen defaults to now (or to a
    # first_seen in the future), first_seen to the earlier of now and last_seen.
    if last_seen is None:
        last_seen = now if first_seen is None or first_seen <= now else first_seen
    if first_seen is None:
        first_seen = min(now, last_seen)
    return Sighting(
        type=t,
        value=v,
        first_seen=first_seen,
        last_seen=last_seen,
        reputation=reputation,
        severity=severity,
        tags=tags,
        comments=comments,
        reference=reference,
        expires_at=expires_at,
        retracted=retracted,
    )


def split_tags(cell: str, separator: str) -> tuple[str, ...]:
    return tuple(t for t in (p.strip() for p in cell.split(separator)) if t)


# --------------------------------------------------------------------------- csv

CSV_COLUMNS = ("value", "type", "severity", "tags", "first_seen", "last_seen", "comments", "reference")


def resolve_columns(cfg: Any, header: list[str] | None) -> dict[str, int | None]:
    """Map each configured ``*_column`` to a 0-based index (raises ValueError)."""
    names: dict[str, int] = {}
    folded: dict[str, int] = {}
    for i, name in enumerate(header or ()):
        names.setdefault(name, i)
        folded.setdefault(name.strip().lower(), i)
    out: dict[str, int | None] = {}
    for key in CSV_COLUMNS:
        spec = getattr(cfg, f"{key}_column")
        if spec is None or isinstance(spec, int):
            out[key] = spec
            continue
        if header is None:
            raise ValueError(f"{key}_column = {spec!r} needs a header row")
        idx = names.get(spec, folded.get(spec.strip().lower()))
        if idx is None:
            raise ValueError(f"header has no column {spec!r} (for {key}_column); it has {header!r}")
        out[key] = idx
    return out


def csv_parser(cfg: Any, header: list[str] | None, now: int) -> Parser:
    """Rows of a CSV file; ``header`` is the parsed header row (or None)."""
    cols = resolve_columns(cfg, header)
    vi = cols["value"]
    assert vi is not None
    dialect = {
        "delimiter": cfg.delimiter,
        "quotechar": cfg.quotechar,
        "skipinitialspace": cfg.skip_initial_space,
        "strict": False,
    }
    optional = [(k, i) for k, i in cols.items() if k != "value" and i is not None]
    sep = cfg.tag_separator

    def sighting(row: list[str]) -> Sighting:
        if vi >= len(row):
            raise BadRecord(f"row has {len(row)} columns, no value column {vi}")
        cells = {k: row[i].strip() for k, i in optional if i < len(row)}
        return build(
            type_cell=cells.get("type"),
            value=row[vi].strip(),
            severity_cell=cells.get("severity"),
            default_type=cfg.type,
            default_severity=cfg.severity,
            now=now,
            tags=split_tags(cells.get("tags", ""), sep),
            comments=cells.get("comments", ""),
            reference=cells.get("reference", ""),
            first_seen=field_time("first_seen", cells.get("first_seen")),
            last_seen=field_time("last_seen", cells.get("last_seen")),
        )

    def parse(lines: Lines) -> Parsed:
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        for where, row in csv_rows(lines, dialect, rejected):
            try:
                out.append(sighting(row))
            except BadRecord as exc:
                rejected.append(Rejected(where=where, reason=str(exc)))
        return out, rejected

    return parse


def csv_rows(lines: Lines, dialect: dict[str, Any], rejected: list[Rejected]) -> Iterator[tuple[str, list[str]]]:
    """CSV rows of numbered lines, each with where it started ("line 17").

    Undecodable lines and rows the csv module refuses go to ``rejected`` and the
    rest carries on; a quoted field may span lines, so a row's number is the
    first source line the reader used for it.

    Each line goes to the reader with a line end: given bare lines, csv joins a
    quoted field's lines with nothing between them, so ``"http://x/j<LF>10.0.0.0/8"``
    would become the valid URL ``http://x/j10.0.0.0/8``. With the line end the
    field keeps its line break (``\n``, or ``\r\n`` as sent) and the value gate
    refuses it.
    """
    texts: list[str] = []
    numbers: list[int] = []
    for lineno, raw in lines:
        try:
            # The line end goes back on: a quoted field that spans lines keeps its line break (and the
            # value gate then refuses it) instead of gluing two lines into one plausible value.
            texts.append(raw.decode() + "\n")
            numbers.append(lineno)
        except UnicodeDecodeError:
            rejected.append(Rejected(where=f"line {lineno}", reason="not valid UTF-8"))
    reader = csv.reader(texts, **dialect)
    consumed = 0  # source lines the csv reader has used so far
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            rejected.append(Rejected(where=f"line {numbers[consumed]}", reason=f"bad CSV: {exc}"))
            consumed = reader.line_num
            continue
        where = f"line {numbers[consumed]}"
        consumed = reader.line_num
        yield where, row


def parse_header(raw: bytes, cfg: Any) -> list[str]:
    """Decode and split the header line (raises ValueError)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValueError("header row is not valid UTF-8") from None
    rows = list(
        csv.reader(
            [text],
            delimiter=cfg.delimiter,
            quotechar=cfg.quotechar,
            skipinitialspace=cfg.skip_initial_space,
            strict=False,
        )
    )
    return [c.strip() for c in rows[0]] if rows else []


# --------------------------------------------------------------------------- jsonl

_Time = int | float | str | None


class JsonRecord(msgspec.Struct, kw_only=True):
    """One line of a JSONL file; unknown keys are ignored."""

    value: str
    type: str | None = None
    severity: str | None = None
    reputation: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    tags: list[str] | str | None = None
    comments: str | None = None
    reference: str | None = None
    first_seen: _Time = None
    last_seen: _Time = None
    expires_at: _Time = None
    retracted: bool = False


def jsonl_parser(cfg: Any, now: int) -> Parser:
    """One JSON object per line (see ``JsonRecord``)."""
    decode = msgspec.json.Decoder(JsonRecord).decode
    sep = cfg.tag_separator

    def sighting(r: JsonRecord) -> Sighting:
        tags = r.tags
        if isinstance(tags, str):
            tags_t = split_tags(tags, sep)
        else:
            tags_t = tuple(t for t in (x.strip() for x in tags or ()) if t)
        return build(
            type_cell=r.type,
            value=r.value.strip(),
            severity_cell=r.severity,
            default_type=cfg.type,
            default_severity=cfg.severity,
            now=now,
            tags=tags_t,
            comments=r.comments or "",
            reference=r.reference or "",
            first_seen=field_time("first_seen", r.first_seen),
            last_seen=field_time("last_seen", r.last_seen),
            expires_at=field_time("expires_at", r.expires_at),
            reputation=r.reputation,
            retracted=r.retracted,
        )

    def parse(lines: Lines) -> Parsed:
        out: list[Sighting] = []
        rejected: list[Rejected] = []
        for lineno, raw in lines:
            try:
                out.append(sighting(decode(raw)))
            except msgspec.DecodeError as exc:  # ValidationError is a subclass
                rejected.append(Rejected(where=f"line {lineno}", reason=f"bad JSON: {exc}"))
            except BadRecord as exc:
                rejected.append(Rejected(where=f"line {lineno}", reason=str(exc)))
        return out, rejected

    return parse
