"""Times and durations. Inside ctd a time is an integer of seconds since the epoch, UTC;
it is rendered as ISO 8601 only at the edges (ctdctl, exports, destinations)."""

from __future__ import annotations

import datetime as _dt
import email.utils as _email_utils
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


# A number of seconds from this on (the year 5138) is taken for milliseconds.
_MS_FROM = 100_000_000_000


def parse_time(text: str, fmt: str | None = None) -> int:
    """Parse a time as feeds write it into epoch seconds; a time without a zone is UTC.

    Read: epoch seconds or milliseconds (a number of 100,000,000,000 or more is
    milliseconds), ISO 8601 with or without the ``T``, with ``Z``, an offset or
    no zone (``2026-01-02 03:04:05``), a date alone, the same followed by
    `` UTC`` or `` GMT``, and RFC 2822 (``Mon, 17 Aug 2015 14:36:19 +0000``).
    With ``fmt`` (``strptime``, e.g. ``%d-%m-%Y``) only that format is read:
    ``01-06-2019`` is ambiguous, so day-first dates are read only when declared.
    Raises ValueError (or OverflowError for a time out of range).
    """
    t = text.strip()
    if fmt is not None:
        d = _dt.datetime.strptime(t, fmt)
    elif t.replace(".", "", 1).isdigit():
        n = float(t)
        return int(n / 1000 if n >= _MS_FROM else n)
    else:
        if t.endswith(("Z", "z")):
            t = t[:-1] + "+00:00"
        elif t.endswith((" UTC", " GMT", " utc", " gmt")):
            t = t[:-4] + "+00:00"
        try:
            d = _dt.datetime.fromisoformat(t)
        except ValueError:
            try:
                d = _email_utils.parsedate_to_datetime(text.strip())
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"not a time: {text[:40]!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return int(d.timestamp())
