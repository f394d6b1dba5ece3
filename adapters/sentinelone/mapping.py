"""Pure mapping for the ``sentinelone`` adapter: Threat Intelligence IOCs and threats.

No I/O. SentinelOne IOCs know DNS, IPV4, IPV6, MD5, SHA1, SHA256 and URL (upper
case, ``method: EQUALS``); there is no CIDR or email type. One invalid item
makes the whole POST a 400 whose errors name ``data.<index>.<field>``, so the
reasons map back to values by position. ``validUntil`` is capped by the console
(30 days for IPs, 180 days for URLs, domains and hashes): ctd sends the item's
own expiry clamped to that cap, or the console's default when it has none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from ctd.model import InvalidIndicator, Rejected, ShareItem, Sighting, canonicalize

API = "/web/api/v2.1"
IOCS = f"{API}/threat-intelligence/iocs"
THREATS = f"{API}/threats"
MAX_LIMIT = 1000  # rows per GET page
DAY = 86400
TO_TYPE = {
    "md5": "MD5",
    "sha1": "SHA1",
    "sha256": "SHA256",
    "ipv4": "IPV4",
    "ipv6": "IPV6",
    "domain": "DNS",
    "hostname": "DNS",
    "url": "URL",
}
FROM_TYPE = {
    "MD5": "md5",
    "SHA1": "sha1",
    "SHA256": "sha256",
    "IPV4": "ipv4",
    "IPV6": "ipv6",
    "DNS": "domain",
    "URL": "url",
}
_REFUSED = {
    "cidr4": "SentinelOne IOCs have no CIDR type (share single addresses)",
    "cidr6": "SentinelOne IOCs have no CIDR type (share single addresses)",
    "email": "SentinelOne IOCs have no email type",
}
DEFAULT_DAYS = {"IPV4": 14, "IPV6": 14, "URL": 90, "DNS": 90, "MD5": 180, "SHA1": 180, "SHA256": 180}
MAX_DAYS = {"IPV4": 30, "IPV6": 30, "URL": 180, "DNS": 180, "MD5": 180, "SHA1": 180, "SHA256": 180}
# IOC severity is an integer in the public examples (1, 4); ctd's scale maps onto 1..4.
TO_SEVERITY = {"low": 1, "medium": 2, "high": 3, "critical": 4}
CONFIDENCE_SEVERITY = {"malicious": "high", "suspicious": "medium"}
_INDEXED = re.compile(r"^data\.(\d+)(?:\.[\w]+)?:\s*(.*)$", re.S)


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(raw: Any) -> int | None:
    if not isinstance(raw, str) or not raw:
        return None
    t = raw.strip().replace(" ", "T")
    t = t[:-1] + "+00:00" if t.endswith("Z") else t
    try:
        d = dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    return int((d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp())


def scope_filter(*, account_id: str | None = None, site_id: str | None = None) -> dict[str, list[str]]:
    """The ``filter`` naming the one scope IOCs live in."""
    if (account_id is None) == (site_id is None):
        raise ValueError("give exactly one of account_id or site_id")
    return {"accountIds": [account_id]} if account_id else {"siteIds": [site_id or ""]}


def next_cursor(body: Any) -> str | None:
    try:
        cursor = body["pagination"].get("nextCursor")
    except (KeyError, TypeError, AttributeError):
        return None
    return cursor if isinstance(cursor, str) and cursor else None


# --- push --------------------------------------------------------------------------------------


def refusal(item: ShareItem) -> str | None:
    if item.type not in TO_TYPE:
        return _REFUSED.get(item.type, f"SentinelOne IOCs have no {item.type} type")
    return None


def external_id(item: ShareItem) -> str:
    """A stable id ctd can find its IOCs by (values can be long URLs)."""
    return "ctd-" + hashlib.sha256(f"{item.type}\n{item.value}".encode()).hexdigest()[:32]


def valid_until(item: ShareItem, now: int) -> int:
    """The item's expiry clamped to the console's cap for its type; the console's default without one."""
    kind = TO_TYPE[item.type]
    cap = now + MAX_DAYS[kind] * DAY
    wanted = item.expires_at if item.expires_at is not None else now + DEFAULT_DAYS[kind] * DAY
    return min(wanted, cap)


def ioc(item: ShareItem, *, now: int, source: str = "ctd") -> dict[str, Any]:
    """The ``data`` entry for one item (callers filter with ``refusal`` first)."""
    via = ", ".join(item.sources)
    body: dict[str, Any] = {
        "type": TO_TYPE[item.type],
        "value": item.value,
        "method": "EQUALS",
        "source": source,
        "externalId": external_id(item),
        "name": f"ctd: {item.value}"[:200],
        "description": (f"{item.comments.strip()} " if item.comments.strip() else "")
        + (f"(shared by ctd from {via})" if via else "(shared by ctd)"),
        "validUntil": iso(valid_until(item, now)),
        "labels": list(dict.fromkeys(("ctd", *item.tags))),
    }
    if item.severity in TO_SEVERITY:
        body["severity"] = TO_SEVERITY[item.severity]
    return body


def create_body(items: list[dict[str, Any]], scope: dict[str, list[str]]) -> dict[str, Any]:
    return {"filter": scope, "data": items}


def delete_body(values: list[str], scope: dict[str, list[str]], uuids: list[str] | None = None) -> dict[str, Any]:
    """Withdraw by value within the scope (``value__in``; never an unselective delete).

    With ``uuids`` (the ids ctd recorded when it created them) only those IOCs go,
    so an IOC someone else made for the same value in the scope stays.
    """
    if not values:
        raise ValueError("nothing to delete")
    flt: dict[str, Any] = {**scope, "value__in": list(values)}
    if uuids is not None:
        flt["uuids"] = list(uuids)
    return {"filter": flt}


def key(ioc_type: str, value: str) -> tuple[str, str]:
    """What makes an IOC one in a scope: its type and value (case does not matter)."""
    return ioc_type, value.lower()


def created_ids(body: Any) -> dict[tuple[str, str], str]:
    """``{(type, value): uuid}`` of the IOCs a POST created or updated."""
    out: dict[tuple[str, str], str] = {}
    for row in body.get("data") or () if isinstance(body, dict) else ():
        if isinstance(row, dict) and isinstance(row.get("uuid"), str):
            if isinstance(row.get("type"), str) and isinstance(row.get("value"), str):
                out[key(row["type"], row["value"])] = row["uuid"]
    return out


def validation_failures(body: Any, sent: list[dict[str, Any]]) -> dict[str, str]:
    """``{value: reason}`` from a refused POST: ``data.<i>...`` errors name sent[i]; others name all."""
    out: dict[str, str] = {}
    general: list[str] = []
    for err in body.get("errors") or () if isinstance(body, dict) else ():
        if not isinstance(err, dict):
            continue
        detail = err.get("detail")
        text = detail if isinstance(detail, str) else str(err.get("title") or "refused")
        m = _INDEXED.match(text)
        if m and int(m.group(1)) < len(sent) and isinstance(sent[int(m.group(1))].get("value"), str):
            value = sent[int(m.group(1))]["value"]
            out[value] = f"{out[value]}; {text}" if value in out else text
        else:
            general.append(text)
    if general:
        reason = "; ".join(general)
        for s in sent:
            if isinstance(s.get("value"), str):
                out.setdefault(s["value"], reason)
    return out


# --- pull --------------------------------------------------------------------------------------


def ioc_to_sighting(row: Any) -> Sighting:
    """A console IOC (someone else's) as a sighting; raises InvalidIndicator."""
    if not isinstance(row, dict):
        raise InvalidIndicator("IOC is not an object")
    kind, value = row.get("type"), row.get("value")
    if kind not in FROM_TYPE or not isinstance(value, str):
        raise InvalidIndicator(
            f"IOC type {kind!r} has no ctd counterpart" if kind not in FROM_TYPE else "IOC has no value"
        )
    typ, value = canonicalize(FROM_TYPE[kind], value)
    labels = row.get("labels")
    return Sighting(
        type=typ,
        value=value,
        first_seen=parse_time(row.get("creationTime")),
        last_seen=parse_time(row.get("updatedAt")) or parse_time(row.get("creationTime")),
        expires_at=parse_time(row.get("validUntil")),
        comments=str(row.get("description") or ""),
        tags=("sentinelone", *(t for t in labels if isinstance(t, str) and t))
        if isinstance(labels, list)
        else ("sentinelone",),
    )


def threat_to_sightings(threat: Any, console: str = "") -> tuple[list[Sighting], list[Rejected]]:
    """The file hashes of one threat (``threatInfo.sha256/sha1/md5``) as sightings.

    A threat an analyst marked false positive withdraws its hashes for this source.
    """
    info = threat.get("threatInfo") if isinstance(threat, dict) else None
    if not isinstance(info, dict):
        return [], [Rejected(where="threat ?", reason="threat has no threatInfo")]
    ident = threat.get("id") or info.get("threatId") or "?"
    where = f"threat {ident}"
    seen = parse_time(info.get("createdAt"))
    base: dict[str, Any] = dict(
        first_seen=seen,
        last_seen=parse_time(info.get("updatedAt")) or seen,
        severity=CONFIDENCE_SEVERITY.get(str(info.get("confidenceLevel") or "").lower(), "unknown"),
        tags=tuple(t for t in ("sentinelone", info.get("classification")) if isinstance(t, str) and t),
        comments=str(info.get("threatName") or ""),
        reference=f"{console.rstrip('/')}/incidents/threats/{ident}/overview" if console else "",
        retracted=info.get("analystVerdict") == "false_positive",
    )
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for field in ("sha256", "sha1", "md5"):
        raw = info.get(field)
        if not isinstance(raw, str) or not raw:
            continue
        try:
            typ, value = canonicalize(field, raw)
        except InvalidIndicator as exc:
            rejected.append(Rejected(where=where, reason=f"{field}: {exc}"))
            continue
        sightings.append(Sighting(type=typ, value=value, **base))
    if not sightings and not rejected:
        rejected.append(Rejected(where=where, reason="threat has no file hash"))
    return sightings, rejected
