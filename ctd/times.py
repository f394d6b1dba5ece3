"""Times and durations. Inside ctd a time is an integer of seconds since the epoch, UTC;
it is rendered as ISO 8601 only at the edges (ctdctl, exports, destinations)."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any


class Duration(float):
    """A span of time in seconds, written ``"90s"``, ``"15m"``, ``"6h"``, ``"14d"`` or a number of seconds."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Duration:
    """Turn ``"15m"`` (or a number of seconds) into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '90s', '15m', '6h' or '14d'")
    if isinstance(value, (int, float)):
        return Duration(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return Duration(float(m.group(1)) * _UNIT[m.group(2)])
    raise ValueError(f"invalid duration {value!r}: expected e.g. '90s', '15m', '6h' or '14d'")


def now() -> int:
    """Current wall-clock time in whole seconds (UTC epoch)."""
    return int(_dt.datetime.now(_dt.UTC).timestamp())


def iso(ts: int | None) -> str | None:
    """Render an epoch timestamp as ISO 8601 UTC (``2026-11-27T19:45:00Z``)."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Parse ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds into epoch seconds."""
    t = text.strip()
    if t.replace(".", "", 1).isdigit():
        return int(float(t))
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    d = _dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return int(d.timestamp())
