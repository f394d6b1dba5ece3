"""Pure mapping between MISP attributes and ctd indicators (no I/O).

Pull: one MISP attribute (as ``/attributes/restSearch`` returns it) becomes
zero, one or two sightings. Push: a ``ShareItem`` becomes one attribute for
``/attributes/add``. Also the request bodies and the parsing of MISP's
save-failure replies, so they can be tested on fixtures.
"""

from __future__ import annotations

import math
from typing import Any

from ctd.model import InvalidIndicator, Rejected, ShareItem, Sighting, canonicalize, parse_time

# The one MISP type table: what each MISP attribute type holds, read alike by this
# adapter (REST) and by the feed adapter's MISP feed format. Per type, the
# indicators its value carries: (ctd type, or None for "an IP address or network
# of either family"; which part of the value: the WHOLE of it, the FIRST part of a
# composite "a|b" or its LAST part). A composite may hold a "|" in its first part
# (a file name): its last part is after the last "|".
WHOLE, FIRST, LAST = "whole", "first", "last"
MISP_TYPES: dict[str, tuple[tuple[str | None, str], ...]] = {
    "ip-src": ((None, WHOLE),),
    "ip-dst": ((None, WHOLE),),
    # The reference system turns these into a url; without a scheme or path
    # that is not a url, and blocking the address is what a consumer can do.
    "ip-src|port": ((None, FIRST),),
    "ip-dst|port": ((None, FIRST),),
    "domain": (("domain", WHOLE),),
    "domain|ip": (("domain", FIRST), (None, LAST)),
    "hostname": (("hostname", WHOLE),),
    "hostname|port": (("hostname", FIRST),),
    "url": (("url", WHOLE),),
    "md5": (("md5", WHOLE),),
    "sha1": (("sha1", WHOLE),),
    "sha256": (("sha256", WHOLE),),
    "filename|md5": (("md5", LAST),),
    "filename|sha1": (("sha1", LAST),),
    "filename|sha256": (("sha256", LAST),),
    "malware-sample": (("md5", LAST),),  # "name|md5" (the sample itself is an attachment)
    "email": (("email", WHOLE),),
    "email-src": (("email", WHOLE),),
    "email-dst": (("email", WHOLE),),
}
PULL_TYPES: tuple[str, ...] = tuple(MISP_TYPES)
IP_TYPES = ("ipv4", "ipv6", "cidr4", "cidr6")


def attribute_values(mtype: str, value: str) -> list[tuple[str | None, str]]:
    """(ctd type or None for "an IP of either family", raw part) for each indicator an attribute carries.

    Empty for a type not in the table. A composite without its "|" is taken
    whole (its part is then validated as such, and usually rejected).
    """
    out = []
    for typ, part in MISP_TYPES.get(mtype, ()):
        raw = value if part == WHOLE else value.partition("|")[0] if part == FIRST else value.rpartition("|")[2]
        out.append((typ, raw))
    return out


# ctd type -> (MISP type, MISP category) for push. ip-dst takes a CIDR too.
PUSH_TYPES: dict[str, tuple[str, str]] = {
    "url": ("url", "Network activity"),
    "domain": ("domain", "Network activity"),
    "hostname": ("hostname", "Network activity"),
    "ipv4": ("ip-dst", "Network activity"),
    "ipv6": ("ip-dst", "Network activity"),
    "cidr4": ("ip-dst", "Network activity"),
    "cidr6": ("ip-dst", "Network activity"),
    "md5": ("md5", "Payload delivery"),
    "sha1": ("sha1", "Payload delivery"),
    "sha256": ("sha256", "Payload delivery"),
    "email": ("email-dst", "Network activity"),
}

MAX_TAG = 255  # MISP's Tag.name column
MAX_COMMENT = 65_535  # MISP's Attribute.comment is a TEXT column
DUPLICATE_MARK = "already exists"  # "A similar attribute already exists for this event."


def restsearch_body(cfg: Any, *, page: int, start: int, end: int) -> dict[str, Any]:
    """The ``/attributes/restSearch`` body for one page of the pull window."""
    body: dict[str, Any] = {
        "returnFormat": "json",
        "limit": cfg.page_size,
        "page": page,
        "attribute_timestamp": [start, end],
        "type": list(cfg.types),
        # Our own exports never come back (loop prevention); the client checks again.
        "tags": [*cfg.filter_tags, f"!{cfg.export_tag}"],
        # Soft-deleted attributes too: a deletion inside the window is a retraction.
        "deleted": [0, 1],
        "enforceWarninglist": 1 if cfg.enforce_warninglist else 0,
    }
    if cfg.categories:
        body["category"] = list(cfg.categories)
    if cfg.to_ids:
        body["to_ids"] = 1
    if cfg.published is not None:
        body["published"] = 1 if cfg.published else 0
    decay = cfg.include_decay_score or cfg.exclude_decayed or cfg.score_threshold is not None
    if decay:
        body["includeDecayScore"] = 1
    if cfg.exclude_decayed or cfg.score_threshold is not None:
        body["excludeDecayed"] = 1
    if cfg.decaying_model:
        body["decayingModel"] = list(cfg.decaying_model)
    if cfg.score_threshold is not None:
        body["modelOverrides"] = {"threshold": cfg.score_threshold}
    return body


def attributes_of(payload: Any) -> list[dict[str, Any]]:
    """The attribute list of a restSearch reply; raise ValueError if it is not one."""
    if isinstance(payload, dict) and "response" in payload:
        payload = payload["response"]
    if payload == []:  # some MISP versions answer an empty search with an empty list
        return []
    if not isinstance(payload, dict) or not isinstance(payload.get("Attribute"), list):
        raise ValueError("not a restSearch attribute list")
    attrs = payload["Attribute"]
    if not all(isinstance(a, dict) for a in attrs):
        raise ValueError("attribute list holds a non-object")
    return attrs


def tag_names(attr: dict[str, Any]) -> list[str]:
    tags = attr.get("Tag") or []
    return [t["name"] for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)]


def _canon(typ: str | None, raw: str) -> tuple[str, str]:
    if typ is not None:
        return canonicalize(typ, raw)
    found, canon = canonicalize(None, raw)
    if found not in IP_TYPES:
        raise InvalidIndicator("not an IP address or network")
    return found, canon


def decay_reputation(attr: dict[str, Any]) -> int | None:
    """Reputation 1..10 from the best decay score (0..100) MISP attached, if any."""
    raw = [d.get("score") for d in attr.get("decay_score") or [] if isinstance(d, dict)]
    scores = [float(s) for s in raw if isinstance(s, (int, float)) and not isinstance(s, bool)]
    if not scores:
        return None
    return max(1, min(10, math.ceil(max(scores) / 10)))


def _time(text: Any) -> int | None:
    if text in (None, ""):
        return None
    try:
        return parse_time(str(text))
    except ValueError:
        return None


def map_attribute(
    attr: dict[str, Any],
    *,
    base_url: str,
    export_tag: str,
    to_ids_only: bool,
) -> tuple[list[Sighting], list[Rejected]]:
    """Sightings for one attribute (none if it is ours, not for IDS, or of an unknown type)."""
    where = f"attribute {attr.get('id', '?')}"
    mtype, value = attr.get("type"), attr.get("value")
    tags = tag_names(attr)
    if export_tag in tags or mtype not in PULL_TYPES:
        return [], []
    if to_ids_only and not attr.get("to_ids"):
        return [], []
    if not isinstance(value, str) or not value:
        return [], [Rejected(where=where, reason="no value")]
    event_id = attr.get("event_id")
    reference = f"{base_url}/events/view/{event_id}" if event_id not in (None, "") else ""
    category = attr.get("category")
    if isinstance(category, str) and category:
        tags.append(f"misp-category:{category}")
    timestamp = _time(attr.get("timestamp"))
    first_seen = _time(attr.get("first_seen"))
    last_seen = _time(attr.get("last_seen")) or timestamp
    comment: str = attr["comment"] if isinstance(attr.get("comment"), str) else ""
    out: list[Sighting] = []
    rejected: list[Rejected] = []
    for typ, raw in attribute_values(mtype, value):
        try:
            ctype, canon = _canon(typ, raw)
        except InvalidIndicator as exc:
            rejected.append(Rejected(where=where, reason=f"{mtype} {raw[:80]!r}: {exc}"))
            continue
        out.append(
            Sighting(
                type=ctype,
                value=canon,
                first_seen=first_seen,
                last_seen=last_seen,
                reputation=decay_reputation(attr),
                tags=tuple(tags),
                comments=comment,
                reference=reference,
                retracted=bool(attr.get("deleted")),
            )
        )
    return out, rejected


# --- push --------------------------------------------------------------------------


def source_tag(export_tag: str, sources: tuple[str, ...]) -> str:
    """``<export_tag>:source="a,b"``, shortened to MISP's 255-character tag limit."""
    head, tail = f'{export_tag}:source="', '"'
    names = ",".join(sources)
    room = MAX_TAG - len(head) - len(tail)
    if len(names) > room:
        names = names[: max(0, room - 3)] + "..."
    return head + names + tail


def to_attribute(item: ShareItem, export_tag: str) -> dict[str, Any]:
    """The ``/attributes/add`` object for one shared indicator."""
    mtype, category = PUSH_TYPES[item.type]
    return {
        "type": mtype,
        "category": category,
        "value": item.value,
        "to_ids": True,
        "distribution": 5,  # inherit the event's distribution
        "comment": item.comments[:MAX_COMMENT],
        "Tag": [{"name": export_tag[:MAX_TAG]}, {"name": source_tag(export_tag, item.sources)}],
    }


def reason_of(errors: Any) -> str:
    """MISP validation errors (``{"value": ["msg"]}`` or a string) as one line."""
    if isinstance(errors, dict):
        parts = []
        for field, msgs in errors.items():
            if isinstance(msgs, list):
                msgs = "; ".join(str(m) for m in msgs)
            parts.append(f"{field}: {msgs}")
        return ", ".join(parts) or "refused"
    if isinstance(errors, list):
        return "; ".join(str(e) for e in errors) or "refused"
    return str(errors) or "refused"


def add_failures(body: Any, sent: list[dict[str, Any]]) -> dict[int, str]:
    """Index in ``sent`` -> MISP's reason, from an ``/attributes/add`` reply.

    A partial success is a 200 whose ``errors`` maps ``attribute_<i>`` to the
    validation errors of the i-th attribute sent; a total failure is a 403
    with ``saved: false`` and the same ``errors`` (or, for a single attribute,
    that attribute's errors directly).
    """
    if not isinstance(body, dict):
        return {}
    errors = body.get("errors")
    if not errors:
        return {}
    if isinstance(errors, dict) and any(str(k).startswith("attribute_") for k in errors):
        out = {}
        for key, errs in errors.items():
            idx = str(key).removeprefix("attribute_")
            if idx.isdigit() and int(idx) < len(sent):
                out[int(idx)] = reason_of(errs)
        return out
    if len(sent) == 1:
        return {0: reason_of(errors)}
    return {i: reason_of(errors) for i in range(len(sent))}


def is_duplicate(reason: str) -> bool:
    """MISP refuses an attribute the event already holds: for us it is delivered."""
    return DUPLICATE_MARK in reason


def is_save_failure(body: Any) -> bool:
    """A 403 that is MISP's ``saveFailResponse`` (validation), not an auth failure."""
    return isinstance(body, dict) and body.get("saved") is False and "errors" in body
