"""``ctdctl sources show NAME``: one source's state, its last counts, and what it rejected by reason class."""

from __future__ import annotations

from typing import Any, TextIO

from ctd.ctdctl.render import kv, table

# The reason classes in the order an operator reads them, with what each means.
CLASSES = (
    ("malformed", "malformed records (counted invalid)"),
    ("unsupported_type", "unsupported types"),
    ("unsupported_pattern", "unsupported patterns"),
    ("field", "field warnings (the IoC was kept, the field dropped)"),
    ("allowlisted", "allow-listed (stored, never active)"),
)
COUNTS = ("new", "updated", "invalid", "unsupported", "field_warnings", "allowlisted", "retracted", "warninglisted")


def source_show(out: TextIO, data: dict[str, Any]) -> None:
    """A key/value block, then per reason class the records kept (newest first), or that there are none."""
    counts = data.get("last_counts") or {}
    kv(
        out,
        [
            *((k, data.get(k)) for k in ("name", "adapter", "pull", "state", "last_run", "last_success", "next_run")),
            ("last counts", " ".join(f"{k}={counts.get(k, 0)}" for k in COUNTS)),
            ("indicators", data.get("indicators", 0)),
            ("last_error", data.get("last_error")),
        ],
    )
    rejected = data.get("rejected") or {}
    for key, title in CLASSES:
        rows = rejected.get(key) or []
        out.write(f"\n{title}: {len(rows) if rows else 'none'} kept\n")
        if rows:
            table(out, ("AT", "WHERE", "REASON"), [(r.get("at"), r.get("where"), r.get("reason")) for r in rows])
