"""Pure mapping for the ``defender`` adapter (Microsoft Defender for Endpoint indicators and alerts).

No I/O. Defender's custom indicators know seven types (FileSha1, FileSha256,
FileMd5, CertificateThumbprint, IpAddress, DomainName, Url) and no CIDR
notation; ctd's email and CIDR types are refused per item with a reason. An
import answers per indicator ``{id, indicator, isFailed, failureReason}``.
Alerts carry evidence (``$expand=evidence``) whose hashes, IPs and URLs become sightings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ctd.model import InvalidIndicator, Rejected, ShareItem, Sighting, canonicalize

API = "https://api.securitycenter.microsoft.com"
LOGIN = "https://login.microsoftonline.com"
SCOPE = "https://api.securitycenter.microsoft.com/.default"
MAX_BATCH = 500  # indicators per import / ids per BatchDelete
MAX_ACTIVE = 15_000  # active indicators per tenant
MAX_TOP = 10_000  # rows per GET page
MARK = "ctd"  # the ``application`` of every indicator ctd creates: its own, to list and withdraw

TO_TYPE = {
    "md5": "FileMd5",
    "sha1": "FileSha1",
    "sha256": "FileSha256",
    "ipv4": "IpAddress",
    "ipv6": "IpAddress",
    "domain": "DomainName",
    "hostname": "DomainName",
    "url": "Url",
}
FROM_TYPE = {"FileMd5": "md5", "FileSha1": "sha1", "FileSha256": "sha256", "DomainName": "domain", "Url": "url"}
_REFUSED = {
    "email": "Defender for Endpoint indicators have no email type",
    "cidr4": "Defender for Endpoint indicators do not support CIDR notation for IPs",
    "cidr6": "Defender for Endpoint indicators do not support CIDR notation for IPs",
}
ACTIONS = ("Alert", "Warn", "Block", "Audit", "BlockAndRemediate", "AlertAndBlock", "Allowed")
TO_SEVERITY = {"unknown": "Informational", "low": "Low", "medium": "Medium", "high": "High", "critical": "High"}
FROM_SEVERITY = {"informational": "unknown", "low": "low", "medium": "medium", "high": "high"}
NOT_ENFORCED = ("Allowed",)  # an indicator switched to Allowed withdraws the value for this source


def token_url(tenant: str) -> str:
    return f"{LOGIN}/{tenant}/oauth2/v2.0/token"


def iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(raw: Any) -> int | None:
    """Defender's ISO times (7 fraction digits, ``Z``) as epoch seconds; None if absent or garbled."""
    if not isinstance(raw, str) or not raw:
        return None
    t = raw.strip()
    t = t[:-1] + "+00:00" if t.endswith("Z") else t
    if "." in t:  # fromisoformat takes at most 6 fraction digits
        head, _, tail = t.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        t = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        d = dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    return int((d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp())


def odata_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def own_filter() -> str:
    """``$filter`` selecting the indicators ctd created (to reconcile or withdraw them)."""
    return f"application eq {odata_quote(MARK)}"


def next_link(body: Any) -> str | None:
    link = body.get("@odata.nextLink") if isinstance(body, dict) else None
    return link if isinstance(link, str) and link else None


# --- push --------------------------------------------------------------------------------------


def refusal(item: ShareItem, action: str) -> str | None:
    """Why this item cannot become a Defender indicator with ``action`` (None if it can)."""
    if item.type not in TO_TYPE:
        return _REFUSED.get(item.type, f"Defender for Endpoint indicators have no {item.type} type")
    if action not in ACTIONS:
        return f"unknown Defender action {action!r}"
    return None


def describe(item: ShareItem) -> str:
    via = "ctd from " + ", ".join(item.sources) if item.sources else "ctd"
    text = item.comments.strip()
    return f"{text} (shared by {via})" if text else f"shared by {via}"


def indicator(
    item: ShareItem,
    *,
    action: str,
    generate_alert: bool = True,
    severity: str | None = None,
    rbac_groups: tuple[str, ...] = (),
    default_expiry: int | None = None,
) -> dict[str, Any]:
    """The import body entry for one item (callers filter with ``refusal`` first).

    ``Audit`` only exists with an alert, so it forces ``generateAlert``. With no
    expiry of its own the item gets ``default_expiry`` (epoch) if given.
    """
    expires = item.expires_at if item.expires_at is not None else default_expiry
    body: dict[str, Any] = {
        "indicatorValue": item.value,
        "indicatorType": TO_TYPE[item.type],
        "action": action,
        "application": MARK,
        "title": f"ctd: {item.value}"[:250],
        "description": describe(item)[:1000],
        "severity": severity or TO_SEVERITY.get(item.severity, "Informational"),
        "generateAlert": True if action == "Audit" else generate_alert,
        "rbacGroupNames": list(rbac_groups),
    }
    if expires is not None:
        body["expirationTime"] = iso(expires)
    return body


def import_failures(body: Any, sent: list[dict[str, Any]]) -> dict[str, str]:
    """``{value: reason}`` for the indicators an import refused; others were created or updated."""
    out: dict[str, str] = {}
    rows = body.get("value") if isinstance(body, dict) else None
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, dict) and row.get("isFailed") and isinstance(row.get("indicator"), str):
            reason = str(row.get("failureReason") or "refused")
            if "15000" in reason.replace(",", "") or "limit" in reason.lower():
                reason = f"Defender tenant limit of {MAX_ACTIVE:,} active indicators: {reason}"
            out[row["indicator"]] = reason
    return out


def imported_ids(body: Any) -> dict[str, str]:
    """``{value: id}`` for the indicators an import created or updated."""
    out: dict[str, str] = {}
    rows = body.get("value") if isinstance(body, dict) else None
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, dict) and not row.get("isFailed") and isinstance(row.get("indicator"), str):
            ident = row.get("id")
            if isinstance(ident, str | int) and str(ident):
                out[row["indicator"]] = str(ident)
    return out


def key(indicator_type: str, value: str) -> tuple[str, str]:
    """What makes an indicator one in a tenant: its type and value (case does not matter)."""
    return indicator_type, value.lower()


def row_key(row: Any) -> tuple[str, str] | None:
    if (
        isinstance(row, dict)
        and isinstance(row.get("indicatorType"), str)
        and isinstance(row.get("indicatorValue"), str)
    ):
        return key(row["indicatorType"], row["indicatorValue"])
    return None


# Alerts a custom indicator raised (ctd's own among them) are those indicators at work, not new intel.
_CUSTOM_TI = ("customti", "customerti")


def raised_by_indicator(alert: Any) -> bool:
    source = alert.get("detectionSource") if isinstance(alert, dict) else None
    return isinstance(source, str) and source.replace(" ", "").lower() in _CUSTOM_TI


def error_reason(body: Any) -> str:
    """The message of an ``{"error": {"code", "message"}}`` reply (for a whole-request refusal)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return f"{err.get('code') or 'Error'}: {err.get('message') or ''}".strip()
    return "refused"


def ids_for(listing: Any, values: set[str]) -> dict[str, str]:
    """``{value: id}`` for our indicators in a ``GET /api/indicators`` page (for BatchDelete)."""
    out: dict[str, str] = {}
    for row in listing.get("value") or () if isinstance(listing, dict) else ():
        if isinstance(row, dict) and row.get("indicatorValue") in values and isinstance(row.get("id"), str):
            out[row["indicatorValue"]] = row["id"]
    return out


# --- pull --------------------------------------------------------------------------------------


def indicator_to_sighting(row: Any) -> Sighting:
    """A custom indicator (someone else's) as a sighting; ``Allowed`` withdraws it. Raises InvalidIndicator."""
    if not isinstance(row, dict):
        raise InvalidIndicator("indicator is not an object")
    kind, value = row.get("indicatorType"), row.get("indicatorValue")
    if not isinstance(value, str):
        raise InvalidIndicator("indicator has no value")
    if kind == "IpAddress":
        typ = "ipv6" if ":" in value else "ipv4"
    elif kind in FROM_TYPE:
        typ = FROM_TYPE[kind]
    else:
        raise InvalidIndicator(f"indicator type {kind!r} has no ctd counterpart")
    typ, value = canonicalize(typ, value)
    return Sighting(
        type=typ,
        value=value,
        first_seen=parse_time(row.get("creationTimeDateTimeUtc")),
        last_seen=parse_time(row.get("lastUpdateTime")),
        severity=FROM_SEVERITY.get(str(row.get("severity") or "").lower(), "unknown"),
        comments=str(row.get("description") or row.get("title") or ""),
        expires_at=parse_time(row.get("expirationTime")),
        retracted=row.get("action") in NOT_ENFORCED,
        tags=("defender",),
    )


def _evidence_values(ev: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for field, typ in (("sha256", "sha256"), ("sha1", "sha1")):
        if isinstance(ev.get(field), str) and ev[field]:
            found.append((typ, ev[field]))
    ip = ev.get("ipAddress")
    if isinstance(ip, str) and ip:
        found.append(("ipv6" if ":" in ip else "ipv4", ip))
    if isinstance(ev.get("url"), str) and ev["url"]:
        found.append(("url", ev["url"]))
    return found


def alert_to_sightings(alert: Any) -> tuple[list[Sighting], list[Rejected]]:
    """The indicators in one alert's evidence (file/process hashes, IPs, URLs), each a sighting."""
    if not isinstance(alert, dict):
        return [], [Rejected(where="alert ?", reason="alert is not an object")]
    where = f"alert {alert.get('id') or '?'}"
    seen = parse_time(alert.get("alertCreationTime"))
    last = parse_time(alert.get("lastUpdateTime")) or seen
    tags = tuple(
        t for t in ("defender", alert.get("category"), alert.get("threatFamilyName")) if isinstance(t, str) and t
    )
    base: dict[str, Any] = dict(
        first_seen=seen,
        last_seen=last,
        tags=tags,
        severity=FROM_SEVERITY.get(str(alert.get("severity") or "").lower(), "unknown"),
        comments=str(alert.get("title") or ""),
        reference=f"https://security.microsoft.com/alerts/{alert['id']}" if alert.get("id") else "",
        retracted=alert.get("classification") == "FalsePositive",
    )
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for ev in alert.get("evidence") or ():
        if not isinstance(ev, dict):
            continue
        for typ, raw in _evidence_values(ev):
            try:
                typ, value = canonicalize(typ, raw)
            except InvalidIndicator as exc:
                rejected.append(Rejected(where=where, reason=f"evidence {typ}: {exc}"))
                continue
            sightings.append(Sighting(type=typ, value=value, **base))
    if not sightings and not rejected:
        rejected.append(Rejected(where=where, reason="no hash, IP or URL in the evidence"))
    return sightings, rejected
