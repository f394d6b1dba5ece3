"""Indicator data model shared by adapters, actors and the store.

Times are integer seconds since the epoch, UTC, everywhere inside ctd; they
are rendered as ISO 8601 only at the edges (ctdctl, exports).
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

import msgspec

IndicatorType = Literal[
    "url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6",
    "md5", "sha1", "sha256", "email",
]
INDICATOR_TYPES: tuple[str, ...] = (
    "url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6",
    "md5", "sha1", "sha256", "email",
)

Severity = Literal["unknown", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("unknown", "low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

DEFAULT_REPUTATION = 5


class Sighting(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One source's report of one indicator. ``type``/``value`` are canonical."""

    type: str
    value: str
    first_seen: int | None = None
    last_seen: int | None = None
    reputation: int | None = None
    severity: str = "unknown"
    tags: tuple[str, ...] = ()
    comments: str = ""
    reference: str = ""
    expires_at: int | None = None  # the feed's own explicit expiry, if any
    retracted: bool = False  # the source revokes this indicator


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """A record an adapter could not turn into a sighting (counted and reported)."""

    where: str  # e.g. "line 17"
    reason: str


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter's ``pull`` yields: sightings plus where to resume.

    ``sub_checkpoint`` is committed in the same transaction as the sightings, so
    a pull interrupted after this batch resumes right after it. ``cursor`` (if
    not None) replaces the source's durable adapter state (ETag, server date,
    iterator index...) in that same transaction. ``snapshot_end`` says this
    batch completes a full snapshot of the source: every value of this source
    not reported since the snapshot began is retracted for this source.
    """

    sightings: list[Sighting]
    rejected: list[Rejected] = []
    sub_checkpoint: dict | None = None
    cursor: dict | None = None
    snapshot_end: bool = False


class PullContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a pull starts from."""

    since: int  # last successful cycle start, or now - initial_range on the first run
    now: int
    cursor: dict | None = None  # the adapter's durable state from the last batch
    sub_checkpoint: dict | None = None  # resume point of a half-done pull


def now() -> int:
    """Current wall-clock time in whole seconds (UTC epoch)."""
    return int(_dt.datetime.now(_dt.timezone.utc).timestamp())


def iso(ts: int | None) -> str | None:
    """Render an epoch timestamp as ISO 8601 UTC (``2026-11-27T19:45:00Z``)."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Parse ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds into epoch seconds."""
    t = text.strip()
    if t.replace(".", "", 1).isdigit():
        return int(float(t))
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    d = _dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp())


class Secret(str):
    """A secret config value (token, password, key): a ``str`` that never shows in a repr.

    Adapters declare secret fields with this type, so printing or logging an
    options Struct shows ``'***'``; the value itself works wherever a str does.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"
