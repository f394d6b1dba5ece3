"""Pure mapping between STIX 2.1 indicators and ctd sightings / share items.

Pull: an ``indicator`` whose STIX pattern names IoC values (see
``stix.reduce_pattern``) becomes one sighting per value. ``confidence``
0..100 becomes reputation 1..10, ``labels`` and ``indicator_types`` become
tags, ``valid_until`` the expiry; a revoked indicator, or one whose
``valid_until`` has passed, retracts its values for this source. ``modified``
(else ``created``) is the source's last_seen: metadata, not what ages the IoC.
What cannot be mapped is returned as ``Rejected`` so it is counted while the
rest ingests: an unsupported pattern (or pattern type) as
``UNSUPPORTED_PATTERN``, a broken one or a bad value as ``MALFORMED``, an
unreadable time as a ``FIELD`` warning (the field is dropped).

Push: one indicator per IoC, its id derived from its pattern, so publishing
the same IoC again is a new version (newer ``modified``) of the same object.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable
from typing import Any

import msgspec

from ctd.adapters.taxii.stix import MalformedPattern, build_pattern, indicator_id, reduce_pattern
from ctd.model import (
    FIELD,
    MALFORMED,
    UNSUPPORTED_PATTERN,
    InvalidIndicator,
    Rejected,
    ShareItem,
    Sighting,
    canonicalize,
    parse_time,
)

_enc = msgspec.json.Encoder()
# What a ``*_ref.value`` may be when the pattern does not say its type.
_ADDRESS_TYPES = ("ipv4", "ipv6", "cidr4", "cidr6", "domain")

# {"objects":[ ... ]} around the comma-joined objects of an envelope.
_ENVELOPE_HEAD = b'{"objects":['
_ENVELOPE_TAIL = b"]}"


def confidence_to_reputation(confidence: Any) -> int | None:
    """STIX confidence 0..100 -> ctd reputation 1..10 (0-10 -> 1, 91-100 -> 10); None if absent or invalid."""
    if type(confidence) is not int or not 0 <= confidence <= 100:
        return None
    return max(1, math.ceil(confidence / 10))


def reputation_to_confidence(reputation: int) -> int:
    """The inverse of ``confidence_to_reputation`` on 1..10."""
    return max(0, min(100, reputation * 10))


def _time(obj: dict, key: str, where: str, rejected: list[Rejected]) -> int | None:
    """An optional timestamp; one that cannot be read is dropped with a field warning."""
    raw = obj.get(key)
    if raw is None:
        return None
    try:
        if not isinstance(raw, str):
            raise ValueError
        return parse_time(raw)
    except (ValueError, OverflowError):
        rejected.append(Rejected(where=where, reason=f"bad {key} {str(raw)[:40]!r} (dropped)", kind=FIELD))
        return None


def _strings(v: Any) -> list[str]:
    return [s for s in v if isinstance(s, str) and s] if isinstance(v, list) else []


def _reference(obj: dict) -> str:
    for ref in obj.get("external_references") or ():
        if isinstance(ref, dict) and isinstance(ref.get("url"), str):
            return ref["url"]
    return ""


def map_indicator(obj: dict, now: int) -> tuple[list[Sighting], list[Rejected]]:
    """The sightings one STIX indicator yields, or why it yields none (some values may be rejected)."""
    where = obj["id"] if isinstance(obj.get("id"), str) else "indicator without id"
    ptype = obj.get("pattern_type", "stix")  # STIX 2.0 indicators have no pattern_type
    if ptype != "stix":
        return [], [Rejected(where=where, reason=f"pattern_type {str(ptype)[:40]}", kind=UNSUPPORTED_PATTERN)]
    pattern = obj.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        return [], [Rejected(where=where, reason="no pattern")]
    try:
        terms, skipped = reduce_pattern(pattern)
    except MalformedPattern as exc:
        return [], [Rejected(where=where, reason=f"pattern does not parse: {str(exc)[:200]}")]
    if not terms:
        return [], [Rejected(where=where, reason="; ".join(skipped)[:300], kind=UNSUPPORTED_PATTERN)]
    rejected: list[Rejected] = []
    if skipped:  # an OR of which only some alternatives name values
        rejected.append(
            Rejected(where=where, reason="part skipped: " + "; ".join(skipped)[:300], kind=UNSUPPORTED_PATTERN)
        )
    warnings: list[Rejected] = []
    valid_from = _time(obj, "valid_from", where, warnings)
    valid_until = _time(obj, "valid_until", where, warnings)
    modified = _time(obj, "modified", where, warnings)
    created = _time(obj, "created", where, warnings)
    revoked = obj.get("revoked") is True
    retracted = revoked or (valid_until is not None and valid_until <= now)
    tags = tuple(dict.fromkeys(_strings(obj.get("labels")) + _strings(obj.get("indicator_types"))))
    comments: str = obj["description"] if isinstance(obj.get("description"), str) else ""
    if not comments and isinstance(obj.get("name"), str):
        comments = obj["name"]
    sightings: list[Sighting] = []
    for kind, raw in terms:
        try:
            type_, value = canonicalize(kind, raw)
            if kind is None and type_ not in _ADDRESS_TYPES:
                raise InvalidIndicator("not an IP address, network or domain name")
        except InvalidIndicator as exc:
            rejected.append(Rejected(where=f"{where} value {raw[:80]!r}", reason=str(exc)))
            continue
        sightings.append(
            Sighting(
                type=type_,
                value=value,
                first_seen=valid_from or created,
                last_seen=modified or created,
                reputation=confidence_to_reputation(obj.get("confidence")),
                tags=tags,
                comments=comments,
                reference=_reference(obj),
                expires_at=valid_until,
                retracted=retracted,
            )
        )
    if sightings:
        rejected += warnings
    return sightings, rejected


def map_objects(objects: Any, now: int, start: int = 0) -> tuple[list[Sighting], list[Rejected]]:
    """Map an envelope's ``objects`` (numbered from ``start``); objects that are not indicators are ignored."""
    if not isinstance(objects, list):
        return [], [Rejected(where="envelope", reason="objects is not a list", kind=MALFORMED)]
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for i, obj in enumerate(objects, start):
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            rejected.append(Rejected(where=f"object #{i}", reason="not a STIX object", kind=MALFORMED))
            continue
        if obj["type"] != "indicator":
            continue
        s, r = map_indicator(obj, now)
        sightings += s
        rejected += r
    return sightings, rejected


# --- push ------------------------------------------------------------------------


def stix_time(ms: int) -> str:
    """STIX timestamp with millisecond precision (``created``/``modified`` must have it)."""
    d = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_indicator(item: ShareItem, *, modified_ms: int, revoked: bool = False) -> dict[str, Any]:
    """The STIX 2.1 indicator ctd publishes for one IoC (a new version at ``modified_ms``)."""
    pattern = build_pattern(item.type, item.value)
    created_ms = min(item.first_seen * 1000, modified_ms) if item.first_seen else modified_ms
    valid_from_ms = created_ms
    obj: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": indicator_id(pattern),
        "created": stix_time(created_ms),
        "modified": stix_time(modified_ms),
        "name": item.value[:256],
        "indicator_types": ["malicious-activity"],
        "pattern": pattern,
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": stix_time(valid_from_ms),
        "confidence": reputation_to_confidence(item.reputation),
    }
    if item.comments:
        obj["description"] = item.comments
    if item.expires_at is not None and item.expires_at * 1000 > valid_from_ms:
        obj["valid_until"] = stix_time(item.expires_at * 1000)
    if item.tags:
        obj["labels"] = sorted(set(item.tags))
    if item.reference:
        ref = {"source_name": "ctd"}
        ref["url" if "://" in item.reference else "description"] = item.reference
        obj["external_references"] = [ref]
    if revoked:
        obj["revoked"] = True
    return obj


def envelopes(encoded: Iterable[tuple[str, bytes]], max_bytes: int) -> tuple[list[tuple[list[str], bytes]], list[str]]:
    """Pack encoded objects (key, JSON) into envelopes of at most ``max_bytes``.

    Returns the envelopes (the keys in each, the body) and the keys of objects
    too large for any envelope.
    """
    out: list[tuple[list[str], bytes]] = []
    too_big: list[str] = []
    keys: list[str] = []
    parts: list[bytes] = []
    size = len(_ENVELOPE_HEAD) + len(_ENVELOPE_TAIL)
    base = size
    for key, data in encoded:
        if base + len(data) > max_bytes:
            too_big.append(key)
            continue
        extra = len(data) + (1 if parts else 0)
        if size + extra > max_bytes:
            out.append((keys, _ENVELOPE_HEAD + b",".join(parts) + _ENVELOPE_TAIL))
            keys, parts, size, extra = [], [], base, len(data)
        keys.append(key)
        parts.append(data)
        size += extra
    if parts:
        out.append((keys, _ENVELOPE_HEAD + b",".join(parts) + _ENVELOPE_TAIL))
    return out, too_big


def encode(obj: dict[str, Any]) -> bytes:
    return _enc.encode(obj)


def status_failures(status: dict) -> dict[str, str]:
    """Object id -> reason, from a TAXII status resource's ``failures``."""
    out: dict[str, str] = {}
    for f in status.get("failures") or ():
        if isinstance(f, dict) and isinstance(f.get("id"), str):
            msg = f.get("message") if isinstance(f.get("message"), str) else ""
            out[f["id"]] = (msg or "rejected by the TAXII server")[:300]
    return out
