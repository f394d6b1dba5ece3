"""Line formats of the ``feed`` adapter: text (one value a line), CSV and JSON Lines, parsed as they stream.

No I/O here. Each stream takes the numbered lines of one batch (``feed``) and
returns ``(sightings, rejected)``; ``last=True`` on the final batch settles
what was held back. What is not data is skipped and counted in ``skipped``,
never as invalid:

* a **preamble**: up to ``MAX_PREAMBLE`` lines before the first value (a
  title, a date, a one-word column title) that do not read as values. Past that
  many, or if no value follows at all, they were data after all and are
  rejected (an HTML error page is then "every record rejected", an error);
* **markup** lines that are a single HTML tag (``<pre>``, ``</pre>``), around
  lists published as web pages;
* in JSON Lines, objects without any of the value fields (Spamhaus's closing
  ``{"type": "metadata", ...}``).
"""

from __future__ import annotations

import csv
import re
from typing import Any

import msgspec

from ctd.adapters.feed.records import (
    Column,
    FormatError,
    Lines,
    Parsed,
    Spec,
    first_line,
    issues_at,
    map_record,
    rejected,
)
from ctd.adapters.feed.stream import json_item
from ctd.adapters.file.formats import BadRecord, csv_rows, strip_inline_comment
from ctd.model import Rejected, Sighting

MAX_PREAMBLE = 20
_MARKUP = re.compile(rb"<(?:/?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?|![^<>]*)>")


class TextStream:
    """One value per line; comment and blank lines skipped, `` # note`` after a value cut off."""

    def __init__(self, spec: Spec, now: int) -> None:
        self.prefix = spec.comment_prefix.encode()
        self.spec = msgspec.structs.replace(spec, fields={"value": (0,)}, template=())
        self.now = now
        self.pending: list[Rejected] | None = []  # preamble candidates; None once a value was seen
        self.skipped = 0

    def feed(self, lines: Lines, skip_to: int = 0, last: bool = False) -> Parsed:
        prefix = self.prefix
        out: list[Sighting] = []
        rejects: list[Rejected] = []
        for n, raw in lines:
            s = raw.strip()
            if n <= skip_to:
                self.pending = None  # resumed after committed lines: the preamble is behind us
                continue
            if not s or (prefix and s.startswith(prefix)):
                continue
            if _MARKUP.fullmatch(s):
                self.skipped += 1
                continue
            if prefix and prefix in s:
                s = strip_inline_comment(s, prefix)
            where = f"line {n}"
            try:
                text = s.decode()
                sightings, issues = map_record(lambda _c: text, self.spec, self.now)  # noqa: B023  (called at once)
                bad = issues_at(where, issues)
            except UnicodeDecodeError:
                sightings, bad = [], [Rejected(where=where, reason="not valid UTF-8")]
            except BadRecord as exc:
                sightings, bad = [], [rejected(where, exc)]
            if self.pending is not None:
                if not sightings:
                    self.pending += bad
                    if len(self.pending) > MAX_PREAMBLE:
                        rejects += self.pending
                        self.pending = None
                    continue
                self.skipped += len(self.pending)
                self.pending = None
            out.extend(sightings)
            rejects.extend(bad)
        if last and self.pending:
            rejects += self.pending  # no value ever came: those lines were the body, not its preamble
            self.pending = None
        return out, rejects


class CsvStream:
    """CSV rows by header name or 0-based column number.

    With ``header``, the header is the first non-comment line that has the
    named columns, or the last comment line before it if that has them
    (abuse.ch exports: ``# id,dateadded,url,...``: then that line is already
    data). Lines before the header are a preamble (up to ``MAX_PREAMBLE``).
    Columns a preset names as optional may be missing; of several value
    columns, those present are read. With ``column_count``, a row with more
    cells had the delimiter inside ``overflow_column``, which gets them back.
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
        self.first_row: list[str] | None = None
        self.skipped = 0
        value_cols = [c for _, c in spec.template if c is not None] or list(spec.fields.get("value", ()))
        self.value_cols: list[Column] = value_cols

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
        for cols in (*self.spec.fields.values(), self.value_cols):
            for c in cols:
                if isinstance(c, str):
                    if c.lower() in folded:
                        index[c] = folded[c.lower()]
                    elif c not in self.spec.optional:
                        return None
        if not any(not isinstance(c, str) or c in index for c in self.value_cols):
            return None  # not one of the value columns: not this feed's header
        if self.spec.template and not all(not isinstance(c, str) or c in index for c in self.value_cols):
            return None
        return index

    def _take_header(self, raw: bytes) -> bool:
        """Settle the header at a non-comment line; True if that line was the header (or preamble)."""
        row = self._row(raw)
        if self.first_row is None:
            self.first_row = row
        index = self._resolve(row)
        if index is not None:
            self.index, self.header = index, row
            return True
        if self.last_comment is not None:
            crow = self._row(self.last_comment)
            if (cindex := self._resolve(crow)) is not None:
                self.index, self.header = cindex, crow
                return False
        if self.skipped < MAX_PREAMBLE:
            self.skipped += 1  # a title or a date above the header
            return True
        self._no_header()
        return True  # not reached

    def _no_header(self) -> None:
        wanted = sorted({c for cols in self.spec.fields.values() for c in cols if isinstance(c, str)})
        raise FormatError(f"no header with the columns {wanted!r} (first line has {self.first_row!r})")

    def feed(self, lines: Lines, skip_to: int = 0, last: bool = False) -> Parsed:
        prefix = self.prefix
        data: Lines = []
        rejects: list[Rejected] = []
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
            if _MARKUP.fullmatch(s):
                self.skipped += 1
                continue
            data.append((lineno, raw))
        if last and self.index is None and self.skipped:
            self._no_header()  # lines, but never the header: not this feed (an error page)
        out: list[Sighting] = []
        for where, row in csv_rows(data, self.dialect, rejects):
            self._map(row, where, out, rejects)
        return out, rejects

    def _map(self, row: list[str], where: str, out: list[Sighting], rejects: list[Rejected]) -> None:
        spec = self.spec
        if spec.column_count is not None and spec.overflow_column is not None and len(row) > spec.column_count:
            k, extra = spec.overflow_column, len(row) - spec.column_count
            row = [*row[:k], spec.delimiter.join(row[k : k + extra + 1]), *row[k + extra + 1 :]]
        index = self.index or {}
        cols = [index.get(c, c) for c in self.value_cols]
        if all(not isinstance(i, int) or i >= len(row) for i in cols):
            rejects.append(Rejected(where=where, reason=f"row has {len(row)} columns, no value column"))
            return

        def get(col: Column) -> Any:
            i = index.get(col, col)
            return row[i] if isinstance(i, int) and i < len(row) else None

        try:
            sightings, issues = map_record(get, spec, self.now)
        except BadRecord as exc:
            rejects.append(rejected(where, exc))
            return
        out.extend(sightings)
        rejects.extend(issues_at(where, issues))


class JsonLinesStream:
    """JSON Lines (NDJSON): one JSON value per line, mapped like an item of a JSON feed."""

    def __init__(self, spec: Spec, now: int) -> None:
        self.spec = spec
        self.now = now
        self.skipped = 0
        self.decode = msgspec.json.Decoder().decode

    def feed(self, lines: Lines, skip_to: int = 0, last: bool = False) -> Parsed:
        out: list[Sighting] = []
        rejects: list[Rejected] = []
        for n, raw in lines:
            if n <= skip_to or not raw.strip():
                continue
            where = f"line {n}"
            try:
                item = self.decode(raw)
            except (msgspec.DecodeError, RecursionError) as exc:
                rejects.append(Rejected(where=where, reason=f"bad JSON: {first_line(exc)}"))
                continue
            self.skipped += json_item(item, where, self.spec, self.now, out, rejects)
        return out, rejects


LineStream = TextStream | CsvStream | JsonLinesStream


def line_stream(spec: Spec, now: int) -> LineStream:
    """The stream for a line format (``text``, ``csv`` or ``jsonl``)."""
    if spec.format == "csv":
        return CsvStream(spec, now)
    if spec.format == "jsonl":
        return JsonLinesStream(spec, now)
    return TextStream(spec, now)
