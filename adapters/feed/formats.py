"""Pure parsing for the ``feed`` adapter: bytes in, sightings and rejections out.

No I/O here. ``Spec`` is the resolved parsing configuration (preset and
defaults applied). Text, CSV and JSON Lines are parsed as a stream of
numbered lines (``LineSplitter`` cuts the downloaded chunks; the streams are
in ``lines``) and JSON as a stream of items (``JsonStream``, in ``stream``),
so a large feed is parsed while it downloads, in bounded memory; MISP event
files are parsed as they download too. A record that cannot become a sighting
never stops the parse: it becomes a ``Rejected`` with its position and reason
class, and the rest goes on. Only a problem that makes the whole document
unusable (no header, undecodable JSON) raises ``FormatError``.

The record-level mapping shared by all formats is in ``records``, the line
formats in ``lines``, JSON in ``stream`` and the MISP feed format in ``misp``;
their public names are re-exported here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from ctd.adapters.feed.lines import MAX_PREAMBLE, CsvStream, JsonLinesStream, TextStream, line_stream
from ctd.adapters.feed.misp import MISP_TYPES, misp_event, parse_manifest
from ctd.adapters.feed.records import (
    IP_TYPES,
    ROLES,
    Column,
    FormatError,
    Lines,
    Parsed,
    Spec,
    map_record,
    parse_template,
)
from ctd.adapters.feed.stream import JsonStream, json_items, json_records

__all__ = [
    "IP_TYPES",
    "MAX_PREAMBLE",
    "MAX_LINE",
    "MISP_TYPES",
    "ROLES",
    "Column",
    "CsvStream",
    "FormatError",
    "Inflate",
    "JsonLinesStream",
    "JsonStream",
    "LineSplitter",
    "Lines",
    "Parsed",
    "Spec",
    "TextStream",
    "json_items",
    "json_records",
    "line_stream",
    "map_record",
    "misp_event",
    "parse_manifest",
    "parse_template",
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
