"""Pure mapping for the ``crowdstrike`` adapter: FQL, IOC <-> ctd records, per-IOC errors.

No I/O here, so every rule is unit-tested on plain dicts. CrowdStrike's IOC
management knows five types (sha256, md5, domain, ipv4, ipv6); ctd's other
types either fold into one of them (``hostname`` is a DNS name: ``domain``) or
are refused per IoC with a reason the operator can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from ctd.model import InvalidIndicator, Rejected, ShareItem, Sighting, canonicalize, iso, parse_time

CLOUDS: dict[str, str] = {
    "us-1": "https://api.crowdstrike.com",
    "us-2": "https://api.us-2.crowdstrike.com",
    "eu-1": "https://api.eu-1.crowdstrike.com",
    "us-gov-1": "https://api.laggar.gcw.crowdstrike.com",
}

CsType = Literal["sha256", "md5", "domain", "ipv4", "ipv6"]
CS_TYPES: tuple[CsType, ...] = ("sha256", "md5", "domain", "ipv4", "ipv6")
HASH_TYPES = ("sha256", "md5")
MARK_TAG = "ctd"  # every IoC ctd creates carries it, whatever source_name says

# ctd type -> CrowdStrike type; everything else is refused with _UNSUPPORTED's reason.
TO_CS_TYPE = {
    "sha256": "sha256",
    "md5": "md5",
    "domain": "domain",
    "hostname": "domain",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
}
_UNSUPPORTED = {
    "url": "CrowdStrike IOC management has no url type (share the host as a domain/ip IoC instead)",
    "sha1": "CrowdStrike IOC management accepts sha256 and md5 hashes, not sha1",
    "cidr4": "CrowdStrike IOC management has no network (CIDR) type",
    "cidr6": "CrowdStrike IOC management has no network (CIDR) type",
    "email": "CrowdStrike IOC management has no email type",
}

TO_CS_SEVERITY = {"unknown": "informational", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
FROM_CS_SEVERITY = {
    "informational": "unknown",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}

# An IoC CrowdStrike no longer acts on is withdrawn for this source.
INACTIVE_ACTIONS = ("allow", "no_action")
BLOCKING_ACTIONS = ("prevent", "prevent_no_ui", "allow")  # hash-only, per the API
CAP_MARKER = "limit of 1 million indicators"


def fql_quote(value: str) -> str:
    """A single-quoted FQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fql_list(field: str, values: Iterable[str]) -> str:
    return f"{field}:[{','.join(fql_quote(v) for v in values)}]"


def pull_filter(types: Iterable[str], since_iso: str, source_name: str) -> str:
    """Types, modified since, and not created by ctd (by source and by tag)."""
    return "+".join(
        (
            fql_list("type", types),
            f"modified_on:>={fql_quote(since_iso)}",
            f"source:!{fql_quote(source_name)}",
            f"tags:!{fql_quote(MARK_TAG)}",
        )
    )


def value_chunks(values: list[str], max_chars: int, max_count: int) -> Iterator[list[str]]:
    """Split values so each ``value:[...]`` filter stays short enough for a query string."""
    chunk: list[str] = []
    size = 0
    for v in values:
        n = len(fql_quote(v)) + 1
        if chunk and (size + n > max_chars or len(chunk) >= max_count):
            yield chunk
            chunk, size = [], 0
        chunk.append(v)
        size += n
    if chunk:
        yield chunk


# --- pull ----------------------------------------------------------------------------


def _time(raw: Any) -> int | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        return None


def to_sighting(ioc: Any) -> Sighting:
    """One IOC resource as a sighting; raises InvalidIndicator."""
    if not isinstance(ioc, dict):
        raise InvalidIndicator("IOC is not an object")
    typ, value = ioc.get("type"), ioc.get("value")
    if typ not in CS_TYPES:
        raise InvalidIndicator(f"unsupported IOC type {typ!r}")
    if not isinstance(value, str):
        raise InvalidIndicator("IOC has no value")
    typ, value = canonicalize(typ, value)
    tags = ioc.get("tags")
    action = ioc.get("action")
    return Sighting(
        type=typ,
        value=value,
        first_seen=_time(ioc.get("created_on")),
        last_seen=_time(ioc.get("modified_on")),
        severity=FROM_CS_SEVERITY.get(str(ioc.get("severity") or "").lower(), "unknown"),
        tags=tuple(t for t in tags if isinstance(t, str) and t) if isinstance(tags, list) else (),
        comments=str(ioc.get("description") or ""),
        expires_at=_time(ioc.get("expiration")),
        retracted=action in INACTIVE_ACTIONS or ioc.get("expired") is True,
    )


def parse_page(resources: Any) -> tuple[list[Sighting], list[Rejected]]:
    """The IOCs of one combined-query page; malformed ones are counted, not fatal."""
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for ioc in resources if isinstance(resources, list) else ():
        try:
            sightings.append(to_sighting(ioc))
        except InvalidIndicator as exc:
            where = ioc.get("id") or ioc.get("value") if isinstance(ioc, dict) else None
            rejected.append(Rejected(where=f"IOC {where or '?'}", reason=str(exc)))
    return sightings, rejected


def next_after(body: Any) -> str | None:
    """``meta.pagination.after``: the cursor for the next page, None at the end."""
    try:
        after = body["meta"]["pagination"].get("after")
    except (KeyError, TypeError, AttributeError):
        return None
    return after if isinstance(after, str) and after else None


# --- push ----------------------------------------------------------------------------


def cs_type(item: ShareItem) -> str | None:
    return TO_CS_TYPE.get(item.type)


def unsupported_reason(item: ShareItem, action: str) -> str | None:
    """Why this IoC cannot go to IOC management with ``action`` (None if it can)."""
    typ = cs_type(item)
    if typ is None:
        return _UNSUPPORTED.get(item.type, f"CrowdStrike IOC management has no {item.type} type")
    if action in BLOCKING_ACTIONS and typ not in HASH_TYPES:
        return f"CrowdStrike applies action {action!r} to hashes only, not {typ} (use detect or no_action)"
    return None


def indicator(
    item: ShareItem, *, action: str, platforms: list[str], applied_globally: bool, severity: str | None, source: str
) -> dict[str, Any]:
    """The IOC body for create (PATCH adds ``id``)."""
    typ = cs_type(item)
    assert typ is not None  # callers filter with unsupported_reason first
    tags = [MARK_TAG, *(t for t in dict.fromkeys(item.tags) if t and t != MARK_TAG)]
    body: dict[str, Any] = {
        "type": typ,
        "value": item.value,
        "action": action,
        "platforms": list(platforms),
        "applied_globally": applied_globally,
        "severity": severity or TO_CS_SEVERITY.get(item.severity, "informational"),
        "source": source,
        "tags": tags,
        "description": describe(item),
    }
    if item.expires_at is not None:
        body["expiration"] = iso(item.expires_at)
    return body


def describe(item: ShareItem) -> str:
    text = item.comments.strip()
    via = "shared by ctd from " + ", ".join(item.sources) if item.sources else "shared by ctd"
    return f"{text} ({via})" if text else via


def comment(n: int, verb: str) -> str:
    return f"ctd: {verb} {n} indicator(s)"


def _reason(entry: dict[str, Any]) -> str:
    msg = entry.get("message") or entry.get("message_type") or "rejected"
    code = entry.get("code")
    return f"{msg} (code {code})" if code else str(msg)


def per_ioc_errors(body: Any, sent: list[str], ids: dict[str, str] | None = None) -> dict[str, str]:
    """Values CrowdStrike refused, with its reasons, from a create/update reply.

    Each resource that failed names its ``value`` and carries ``message_type:
    error`` (or a non-empty ``errors`` entry); a batch-level error (for example
    the tenant's IOC cap) that names no value applies to every value sent that
    was not reported as created. ``ids`` maps IOC ids to values for updates,
    whose replies may name the IOC by id only.
    """
    out: dict[str, str] = {}
    if not isinstance(body, dict):
        return out
    created: set[str] = set()
    for res in body.get("resources") or ():
        if not isinstance(res, dict):
            continue
        value = res.get("value")
        if not isinstance(value, str) and ids:
            value = ids.get(str(res.get("id")))
        failed = res.get("message_type") == "error" or bool(res.get("errors"))
        if isinstance(value, str) and failed:
            errs = res.get("errors")
            out[value] = _reason(errs[0] if isinstance(errs, list) and errs and isinstance(errs[0], dict) else res)
        elif isinstance(value, str):
            created.add(value)
    batch_errors = [e for e in body.get("errors") or () if isinstance(e, dict)]
    if batch_errors and not out:
        reason = "; ".join(_reason(e) for e in batch_errors)
        if any(CAP_MARKER in str(e.get("message", "")).lower() for e in batch_errors):
            reason = "CrowdStrike tenant IOC limit reached (1,000,000): " + reason
        for v in sent:
            if v not in created:
                out[v] = reason
    return out
