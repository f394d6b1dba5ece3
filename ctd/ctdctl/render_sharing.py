"""Human output of the rules and sharing commands (``rules list|test``, ``sharing list|show|sync``)."""

from __future__ import annotations

from typing import Any, Final, TextIO

from ctd.ctdctl.render import aligned, cell, duration, kv, table
from ctd.model import iso

LEDGER_STATES: Final = ("pending", "shared", "failed", "retract_pending", "retracted", "unshared")


def _limit(value: Any) -> str:
    return "none" if value is None else str(value)


def rules_list(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl rules list``: one row per rule, its exceptions on indented lines below."""
    if not data:
        out.write("no rules configured\n")
        return
    rows = [
        (
            r.get("name"),
            (f"until {r.get('muted_until')}" if r.get("muted_until") else "yes") if r.get("muted") else "-",
            r.get("used_by") or [],
            r.get("filter"),
        )
        for r in data
    ]
    lines, widths = aligned(("NAME", "MUTED", "USED_BY", "FILTER"), rows)
    indent = " " * (sum(widths[:-1]) + 2 * (len(widths) - 1))
    out.write(lines[0] + "\n")
    for line, r in zip(lines[1:], data, strict=True):
        out.write(line + "\n")
        for exc in r.get("exceptions") or []:
            out.write(f"{indent}except: {exc}\n")


def _by_type(by_type: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in sorted(by_type.items())) or "-"


def rules_test(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl rules test``: what the rule selects now, per sharing configuration against its limits."""
    days = data.get("days")
    recent = f" seen in the last {days} day{'s' if days != 1 else ''}" if days else ""
    out.write(
        f"rule {data.get('rule')} would select {data.get('total', 0)} IoCs{recent} "
        f"({data.get('bytes', 0)} bytes serialised)\n"
    )
    if data.get("muted"):
        out.write("rule is muted: the sharing configurations using it send nothing until it expires\n")
    by_type = data.get("by_type") or {}
    if by_type:
        out.write("\n")
        table(out, ("TYPE", "COUNT"), sorted(by_type.items()))
    sample = data.get("sample") or []
    if sample:
        out.write("\nsample:\n")
        for item in sample:
            out.write(f"  {item.get('type')}  {item.get('value')}\n")
    out.write("\n")
    sharings = data.get("sharing") or []
    if not sharings:
        out.write("no sharing configuration uses this rule\n")
    for s in sharings:
        out.write(
            f"sharing {s.get('name')} -> {s.get('destination')} ({s.get('action')}): "
            f"{s.get('total', 0)} IoCs (limit {_limit(s.get('max_entries'))}), "
            f"{s.get('bytes', 0)} bytes (limit {_limit(s.get('max_bytes'))}); "
            f"by type: {_by_type(s.get('by_type') or {})}\n"
        )
    warnings = data.get("warnings") or [f"{s.get('name')}: {w}" for s in sharings for w in s.get("warnings") or []]
    if warnings:
        out.write("\n")
        for w in warnings:
            out.write(f"warning: {w}\n")
    out.write("\ndry run: nothing was sent\n")


def _last_result(result: dict[str, Any] | None) -> str | None:
    if not result:
        return None
    if result.get("error"):
        return f"error: {result['error']}"
    if result.get("muted"):
        return "muted"
    text = ", ".join(f"{k} {result.get(k, 0)}" for k in ("candidates", "pushed", "rejected", "retracted", "unshared"))
    return text + (" (unchanged)" if result.get("unchanged") else "")


def sharing_list(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl sharing list``: one row per sharing configuration with its ledger counts."""
    if not data:
        out.write("no sharing configured\n")
        return
    rows = []
    for s in data:
        c = s.get("counts") or {}
        rows.append(
            (
                s.get("name"),
                s.get("rule"),
                s.get("destination"),
                s.get("action"),
                s.get("state"),
                s.get("last_run"),
                c.get("shared", 0),
                c.get("pending", 0),
                c.get("failed", 0),
                c.get("retracted", 0),
                c.get("unshared", 0),
                s.get("last_error"),
            )
        )
    table(
        out,
        (
            "NAME",
            "RULE",
            "DESTINATION",
            "ACTION",
            "STATE",
            "LAST_RUN",
            "SHARED",
            "PENDING",
            "FAILED",
            "RETRACTED",
            "UNSHARED",
            "LAST_ERROR",
        ),
        rows,
    )


def sharing_show(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl sharing show``: facts, ledger counts, then the entries that did not go through."""
    interval = data.get("interval_s")
    params = data.get("params") or {}
    kv(
        out,
        [
            ("name", data.get("name")),
            ("rule", data.get("rule")),
            ("sources", data.get("sources")),
            ("destination", data.get("destination")),
            ("action", data.get("action")),
            ("params", ", ".join(f"{k}={cell(v)}" for k, v in sorted(params.items()))),
            ("interval", duration(float(interval)) if interval is not None else None),
            ("state", data.get("state")),
            ("last run", data.get("last_run")),
            ("last success", data.get("last_success")),
            ("next run", data.get("next_run")),
            ("last result", _last_result(data.get("last_result"))),
            ("last error", data.get("last_error")),
            ("apply pending", data.get("apply_pending")),
        ],
    )
    counts = data.get("counts") or {}
    out.write("\n")
    table(out, [s.upper() for s in LEDGER_STATES], [[counts.get(s, 0) for s in LEDGER_STATES]])
    problems = data.get("problems") or []
    out.write("\n")
    if not problems:
        out.write("no failed, unshared or retract_pending entries\n")
        return
    table(
        out,
        ("TYPE", "VALUE", "UPDATED_AT", "STATE", "ERROR"),
        [(p.get("type"), p.get("value"), _when(p.get("updated_at")), p.get("state"), p.get("error")) for p in problems],
    )


def _when(value: Any) -> Any:
    """Epoch seconds as ISO 8601 UTC; anything else as given."""
    return iso(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def sharing_sync(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl sharing sync``: the counts of the pass."""
    kv(
        out,
        [
            (k, data.get(k))
            for k in (
                "sharing",
                "candidates",
                "pushed",
                "rejected",
                "retracted",
                "unshared",
                "unchanged",
                "muted",
                "applied",
                "deferred",
                "error",
                "next_attempt",
            )
        ],
    )
