"""Pure parsing for the ``feed`` adapter: bytes in, sightings and rejections out.

No I/O here. ``Spec`` is the resolved parsing configuration (preset and
defaults applied). Text and CSV are parsed as a stream of numbered lines
(``LineSplitter`` cuts the downloaded chunks) and JSON as a stream of items
(``JsonStream``, in ``stream``), so a large feed is parsed while it
downloads, in bounded memory; MISP event files are parsed whole. A record that
cannot become a sighting never stops the parse: it becomes a ``Rejected`` with
its position, and the rest goes on. Only a problem that makes the whole
document unusable (no header, undecodable JSON) raises ``FormatError``.

The record-level mapping shared by all formats is in ``feed_records``, JSON in
``stream`` and the MISP feed format in ``misp``; their public names are
re-exported here.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator
from typing import Any

import msgspec

from ctd.adapters.feed.misp import MISP_TYPES, misp_event, parse_manifest
from ctd.adapters.feed.records import IP_TYPES, ROLES, Column, FormatError, Lines, Parsed, Spec, map_record
from ctd.adapters.feed.stream import JsonStream, json_items, json_records
from ctd.adapters.file.formats import BadRecord, csv_rows, strip_inline_comment
from ctd.model import Rejected, Sighting

__all__ = [
    "IP_TYPES",
    "MAX_LINE",
    "MISP_TYPES",
    "ROLES",
    "Column",
    "CsvStream",
    "FormatError",
    "Inflate",
    "JsonStream",
    "LineSplitter",
    "Lines",
    "Parsed",
    "Spec",
    "TextStream",
    "json_items",
    "json_records",
    "map_record",
    "misp_event",
    "parse_manifest",
]

MAX_LINE = 1 << 20  # a "line" longer than this is not a feed line: stop instead of buffering it


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
                s = strip_inline_comment(s, prefix)
            where = f"line {n}"
            try:
                text = s.decode()
                sightings, reasons = map_record(lambda _c: text, self.spec, self.now)  # noqa: B023  (called at once)
            except UnicodeDecodeError:
                rejected.append(Rejected(where=where, reason="not valid UTF-8"))
                continue
            except BadRecord as exc:
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
        self.dialect: dict[str, Any] = {
            "delimiter": spec.delimiter,
            "quotechar": spec.quotechar,
            "skipinitialspace": spec.skip_initial_space,
            "strict": False,
        }
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
        data: Lines = []
        rejected: list[Rejected] = []
        for lineno, raw in lines:
            s = raw.strip()
            if not s:
                continue
            if prefix and s.startswith(prefix):
                if self.index is None:
                    body = s[len(prefix) :].strip()
                    if body:
                        self.last_comment = body
                continue
            if self.index is None and self._take_header(raw):
                continue
            if lineno <= skip_to:
                continue
            data.append((lineno, raw))
        out: list[Sighting] = []
        for where, row in csv_rows(data, self.dialect, rejected):
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
        except BadRecord as exc:
            rejected.append(Rejected(where=where, reason=str(exc)))
            return
        out.extend(sightings)
        rejected.extend(Rejected(where=where, reason=r) for r in reasons)
