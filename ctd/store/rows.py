"""The stage row: one sighting as the store ingests it, defined here once.

``to_stage_rows`` is the only place a row is built and ``STAGE_COLUMNS`` the
only place its column order is written; the store's stage table and its
INSERT are made from ``STAGE_COLUMNS``. The row is a plain tuple on purpose:
it is built once per ingested IoC, and a ``NamedTuple`` measured about twice
the cost of a tuple to build (0.9 -> 1.7 us per row in ``to_stage_rows``).

It is also where every sighting, from any adapter, passes the value gate on
its way to the store: built-in adapters canonicalise what they yield, but a
third-party adapter could yield any type and any value. A sighting of an
unknown type, with an empty value or one the gate refuses
(``ctd.canon.value_problem``) becomes a ``Rejected`` instead of a row. It
is the gate's own fast path, inline: ~0.15 us per row, 1-2% of an ingest's
CPU time (bench/ingest.py --n 200000, 30 runs alternated with and without).
Testing the characters once per batch instead was no cheaper: by then the
values are out of the CPU's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from ctd.model import DEFAULT_REPUTATION, SEVERITY_RANK, Rejected, Sighting
from ctd.valuegate import MAX_LENGTH, value_problem

STAGE_COLUMNS: tuple[str, ...] = (
    "type",
    "value",
    "first_seen",
    "last_seen",
    "reputation",
    "severity",
    "tags",
    "comments",
    "reference",
    "expires_at",
    "retracted",
    "allowlisted",
    "warninglist",
    "wl_hold",
)
# In STAGE_COLUMNS order: severity is its rank (ctd.model.SEVERITY_RANK), tags a
# sorted JSON list, expires_at the feed's own expiry (None: aging applies),
# retracted and allowlisted 0 or 1, warninglist the name of the warning list the
# value hit ("" if none) and wl_hold 1 when that hit keeps this report from
# making the indicator active (the plugin's warninglist_action = "inactive").
StageRow = tuple[str, str, int, int, int, int, str, str, str, int | None, int, int, str, int]
# The tag a hit adds under warninglist_action = "tag": "warninglist:NAME".
WARNINGLIST_TAG = "warninglist:"

_tags_enc = msgspec.json.Encoder()


def to_stage_rows(
    sightings: Sequence[Sighting],
    *,
    now: int,
    reputation: int | None,
    extra_tags: Sequence[str],
    allowlisted: Callable[[str, str], bool] | None,
    warninglisted: Callable[[str, str], str | None] | None = None,
    warninglist_tag: bool = False,
    rejected: list[Rejected] | None = None,
) -> list[StageRow]:
    """Turn an adapter's sightings into staged rows, applying the plugin's overrides.

    Sightings that fail the value gate are left out, and appended to ``rejected`` (if given) with the reason.
    ``warninglisted`` is the plugin's guard (``ctd.guard``): the warning list a
    value hits, or None. A hit is staged as reported, flagged with the list's
    name; with ``warninglist_tag`` it also gets the tag ``warninglist:NAME`` and
    counts for activity, else it is held (``wl_hold``) and does not.
    """
    rank = SEVERITY_RANK
    caps = MAX_LENGTH
    enc = _tags_enc.encode
    extra = tuple(extra_tags)
    rows: list[StageRow] = []
    append = rows.append
    for s in sightings:
        t, v = s.type, s.value
        # The gate's fast path, inline: one dict lookup, a length and two C-level scans of a value already in cache.
        if not (0 < len(v) <= caps.get(t, 0) and v.isprintable() and " " not in v):
            reason = _refusal(s)
            if reason is not None:
                if rejected is not None:
                    rejected.append(Rejected(where=f"{t} sighting" if t in caps else "sighting", reason=reason))
                continue
        tags = s.tags
        hit = warninglisted(t, v) if warninglisted is not None else None
        if hit and warninglist_tag:
            tags = (*tags, WARNINGLIST_TAG + hit)
        if extra:
            tags = tuple(sorted(set(tags).union(extra)))
        elif len(tags) > 1:
            tags = tuple(sorted(set(tags)))  # the store's tag union is sorted and distinct too
        last = s.last_seen if s.last_seen is not None else now
        first = s.first_seen if s.first_seen is not None else last
        append(
            (
                t,
                v,
                first,
                last,
                reputation or s.reputation or DEFAULT_REPUTATION,
                rank.get(s.severity, 0),
                enc(tags).decode() if tags else "[]",
                s.comments,
                s.reference,
                s.expires_at,
                1 if s.retracted else 0,
                1 if allowlisted is not None and allowlisted(t, v) else 0,
                hit or "",
                1 if hit and not warninglist_tag else 0,
            )
        )
    return rows


def _refusal(s: Sighting) -> str | None:
    """Why a sighting cannot be stored (an unknown type, an empty value, the value gate's reason), or None."""
    if s.type not in MAX_LENGTH:
        return f"unknown indicator type {str(s.type)[:32]!r}"
    if not s.value:
        return "empty value"
    return value_problem(s.value, s.type)
