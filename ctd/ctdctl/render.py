"""Human-readable output of ctdctl: aligned tables and key/value blocks.

Every function takes the output stream and the data exactly as the daemon
sent it (decoded JSON); times are printed as the ISO strings given.

Terminal safety: the data comes from feeds, vendor APIs and configs, none of
which may drive the operator's terminal. :func:`emit` hands the human
renderers a copy of the data in which every string (and every key) has its
non-printable characters escaped (``ctd.ctdctl.escape``: ``\\x1b``, ``\\n``,
``\\u202e``...), so no field of any table can carry an escape sequence or
forge a line; :func:`cell` escapes again (a no-op on escaped text) for
renderers used directly. JSON output keeps the data exact but writes such
characters as ``\\uXXXX``; CSV stays exact unless it goes to a terminal.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

import msgspec

from ctd.ctdctl.escape import escape, escaped, json_safe

CSV_FIELDS: Final = (
    "type",
    "value",
    "active",
    "severity",
    "reputation",
    "first_seen",
    "last_seen",
    "expires_at",
    "sources",
    "tags",
)


def to_json(data: Any) -> str:
    """Pretty JSON text of ``data`` with a trailing newline."""
    return json_safe(msgspec.json.format(msgspec.json.encode(data), indent=2).decode()) + "\n"


def emit(out: TextIO, data: Any, as_json: bool, human: Any) -> None:
    """Write ``data`` as JSON or through the ``human(out, data)`` renderer (fed escaped data), then flush."""
    if as_json:
        out.write(to_json(data))
    else:
        human(out, escaped(data))
    out.flush()


def cell(value: Any) -> str:
    """One table cell: ``-`` for missing, yes/no for booleans, lists comma-joined, text escaped."""
    match value:
        case None | "":
            return "-"
        case bool():
            return "yes" if value else "no"
        case float():
            return f"{value:.1f}"
        case list() | tuple():
            return ",".join(escape(str(v)) for v in value) or "-"
        case _:
            return escape(str(value))


def aligned(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> tuple[list[str], list[int]]:
    """The lines of an aligned table (header first) and the column widths."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    lines = []
    for row in [list(headers), *text_rows]:
        padded = [v.ljust(w) for v, w in zip(row[:-1], widths, strict=False)]  # the last column is not padded
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return lines, widths


def table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write an aligned table (the last column is not padded)."""
    lines, _ = aligned(headers, rows)
    for line in lines:
        out.write(line + "\n")


def kv(out: TextIO, pairs: Sequence[tuple[str, Any]]) -> None:
    """Write an aligned ``key  value`` block."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        out.write(f"{key.ljust(width)}  {cell(value)}\n")


def duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{s}s")
    return " ".join(parts)


# --- commands -----------------------------------------------------------------


def status(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl status``: daemon facts, indicator counts by type, then the sources."""
    counts = data.get("indicators", {})
    state = data.get("state")
    problems = data.get("problems") or []
    kv(
        out,
        [
            *([("state", f"{state}: {'; '.join(problems)}" if problems else state)] if state else []),
            ("version", data.get("version")),
            ("pid", data.get("pid")),
            ("uptime", duration(float(data.get("uptime_s") or 0))),
            ("config", data.get("config_path")),
            ("config hash", data.get("config_hash")),
            ("indicators", f"{counts.get('total', 0)} total, {counts.get('active', 0)} active"),
        ],
    )
    by_type = counts.get("by_type") or {}
    if by_type:
        out.write("\n")
        table(
            out,
            ("TYPE", "ACTIVE", "INACTIVE"),
            [(t, c.get("active", 0), c.get("inactive", 0)) for t, c in sorted(by_type.items())],
        )
    out.write("\n")
    sources(out, data.get("sources") or [])


def sources(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl sources``: one row per source."""
    if not data:
        out.write("no sources configured\n")
        return
    rows = []
    for s in data:
        c = s.get("last_counts") or {}
        rows.append(
            (
                s.get("name"),
                s.get("adapter"),
                s.get("pull"),
                s.get("state"),
                s.get("last_run"),
                s.get("last_success"),
                s.get("next_run"),
                c.get("new", 0),
                c.get("updated", 0),
                c.get("invalid", 0),
                c.get("retracted", 0),
                c.get("warninglisted", 0),
                s.get("indicators", 0),
                progress_cell(s.get("progress")),
                s.get("last_error"),
            )
        )
    table(
        out,
        (
            "SOURCE",
            "ADAPTER",
            "PULL",
            "STATE",
            "LAST_RUN",
            "LAST_SUCCESS",
            "NEXT_RUN",
            "NEW",
            "UPDATED",
            "INVALID",
            "RETRACTED",
            "WARNINGLISTED",
            "INDICATORS",
            "PROGRESS",
            "LAST_ERROR",
        ),
        rows,
    )


def progress_cell(p: dict[str, Any] | None) -> str | None:
    """A running pull: ``40% (2 records), ETA 22s`` when its size is known, else what was read and the rate."""
    if not p:
        return None
    records = p.get("records", 0)
    if p.get("percent") is not None:
        eta = p.get("eta_s")
        tail = f", ETA {duration(float(eta))}" if eta is not None else ""
        return f"{float(p['percent']):.0f}% ({records} records){tail}"
    parts = [f"{records} records"]
    if p.get("bytes_read"):
        parts.append(human_bytes(p["bytes_read"]))
    if p.get("pages_read"):
        parts.append(f"{p['pages_read']} pages")
    parts.append(f"{float(p.get('records_per_s') or 0):.0f}/s")
    return ", ".join(parts)


def human_bytes(n: Any) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return cell(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def sync(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl sync``: the counts of the pull."""
    kv(
        out,
        [
            (k, data.get(k))
            for k in (
                "source",
                "new",
                "updated",
                "invalid",
                "unsupported",
                "field_warnings",
                "allowlisted",
                "retracted",
                "warninglisted",
                "batches",
                "duration_s",
                "error",
            )
        ],
    )


def reload(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl reload``: the new config hash and what changed, by name."""
    kv(
        out,
        [
            ("config hash", data.get("config_hash")),
            *((k, data.get(k) or []) for k in ("added", "removed", "changed", "unchanged")),
        ],
    )


def indicators_show(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl indicators show``: a key/value block and a sources table per indicator."""
    for n, ind in enumerate(data):
        if n:
            out.write("\n")
        kv(
            out,
            [
                (k, ind.get(k))
                for k in (
                    "type",
                    "value",
                    "active",
                    "allowlisted",
                    "warninglist",
                    "severity",
                    "reputation",
                    "first_seen",
                    "last_seen",
                    "expires_at",
                    "hits",
                    "tags",
                    "reference",
                    "comments",
                )
            ],
        )
        out.write("\n")
        table(
            out,
            (
                "SOURCE",
                "FIRST_SEEN",
                "LAST_SEEN",
                "REPUTATION",
                "SEVERITY",
                "EXPIRES_AT",
                "RETRACTED",
                "WARNINGLIST",
                "TAGS",
            ),
            [
                (
                    s.get("source"),
                    s.get("first_seen"),
                    s.get("last_seen"),
                    s.get("reputation"),
                    s.get("severity"),
                    s.get("expires_at"),
                    s.get("retracted"),
                    _warninglist(s),
                    s.get("tags"),
                )
                for s in ind.get("sources") or []
            ],
        )
        holds = ind.get("operator_retraction") or []
        if holds:
            out.write("\n")
            table(
                out,
                ("RETRACTED_BY_OPERATOR", "SINCE", "UNTIL"),
                [(h.get("source") or "all sources", h.get("since"), h.get("until") or "unretract") for h in holds],
            )
        deliveries = ind.get("deliveries") or []
        if deliveries:
            out.write("\n")
            table(
                out,
                ("DELIVERY", "STATE", "SHARED_AT", "UPDATED_AT", "ERROR"),
                [
                    (d.get("sharing"), d.get("state"), d.get("shared_at"), d.get("updated_at"), d.get("error"))
                    for d in deliveries
                ],
            )


def _warninglist(s: dict[str, Any]) -> str:
    """A report's warning-list verdict: the list's name, and whether it keeps the report from counting."""
    name = s.get("warninglist") or ""
    return f"{name} (held)" if name and s.get("warninglist_held") else name


def indicators_table(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl indicators search``: one row per indicator."""
    if not data:
        return
    table(
        out,
        ("TYPE", "VALUE", "ACTIVE", "SEVERITY", "REPUTATION", "LAST_SEEN", "SOURCES"),
        [
            (
                i.get("type"),
                i.get("value"),
                i.get("active"),
                i.get("severity"),
                i.get("reputation"),
                i.get("last_seen"),
                [s.get("source") for s in i.get("sources") or []],
            )
            for i in data
        ],
    )


# --- export (streamed: one item written as it arrives) ------------------------


def write_jsonl(out: TextIO, items: Iterable[Any]) -> None:
    """One JSON object per line."""
    encode = msgspec.json.encode
    for item in items:
        out.write(json_safe(encode(item).decode()))
        out.write("\n")
    out.flush()


def write_csv(out: TextIO, items: Iterable[dict[str, Any]], *, terminal: bool = False) -> None:
    """CSV with a header; sources and tags joined with ``;``.

    The cells are exact (quoted as CSV needs) unless ``terminal``: read on a
    terminal, they are escaped like every other human-readable output.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for i in items:
        if terminal:
            i = escaped(i)
        writer.writerow(
            [
                i.get("type"),
                i.get("value"),
                "true" if i.get("active") else "false",
                i.get("severity"),
                i.get("reputation"),
                _csv_value(i.get("first_seen")),
                _csv_value(i.get("last_seen")),
                _csv_value(i.get("expires_at")),
                ";".join(str(s.get("source")) for s in i.get("sources") or []),
                ";".join(i.get("tags") or []),
            ]
        )
    out.flush()


def _csv_value(value: Any) -> str:
    return "" if value is None else str(value)
