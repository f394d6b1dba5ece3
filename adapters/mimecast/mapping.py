"""Pure mapping for the ``mimecast`` adapter: logs and feed -> sightings, items -> request bodies, fail[] -> reasons.

No I/O. Mimecast API 2.0 answers ``{"meta", "data", "fail"}``; a refused item
is ``{"key": <the item sent>, "errors": [{"code", "message", "retryable"}]}``
in an HTTP 200, so per-item reasons come from ``fail``, not from the status.
Managed URLs take URLs and domains (``matchType`` ``explicit`` or ``domain``);
managed senders take an email address per (sender, recipient) pair.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from typing import Any

from ctd.model import InvalidIndicator, Rejected, ShareItem, Sighting, canonicalize

# API 2.0 gateways (the token is fetched from the same host, at /oauth/token).
REGIONS: dict[str, str] = {
    "global": "https://api.services.mimecast.com",
    "us": "https://us-api.services.mimecast.com",
    "uk": "https://uk-api.services.mimecast.com",
}
URL_TYPES = ("url", "domain", "hostname")
SENDER_TYPES = ("email",)
CLICK_SEVERITY = {"malicious": "high", "suspicious": "medium"}
ATTACHMENT_SEVERITY = {"malicious": "high", "unsafe": "high", "suspicious": "medium"}


def parse_date(text: Any) -> int | None:
    """Mimecast's ``2015-11-16T14:49:18+0000`` (or ISO 8601) as epoch seconds; None if absent/garbled."""
    if not isinstance(text, str) or not text.strip():
        return None
    t = text.strip().replace("Z", "+0000")
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return int(dt.datetime.strptime(t, fmt).timestamp())
        except ValueError:
            continue
    return None


def stamp(epoch: int) -> str:
    """Epoch seconds in the request date format (``from``/``to``/``start``)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# --- pull --------------------------------------------------------------------------------------


def _rows(body: Any, field: str) -> list[Any]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    return [row for block in data if isinstance(block, dict) for row in (block.get(field) or [])]


def click_to_sighting(log: Any) -> Sighting:
    """One ``clickLogs`` entry (a malicious URL click) as a url sighting; raises InvalidIndicator."""
    if not isinstance(log, dict):
        raise InvalidIndicator("click log is not an object")
    verdict = str(log.get("scanResult") or "").lower()
    if verdict not in CLICK_SEVERITY:
        raise InvalidIndicator(f"scanResult {verdict or 'missing'!r} is not a detection")
    url = log.get("url")
    if not isinstance(url, str):
        raise InvalidIndicator("click log has no url")
    typ, value = canonicalize("url", url)
    seen = parse_date(log.get("date"))
    tags = tuple(t for t in ("mimecast", str(log.get("category") or "").strip()) if t)
    return Sighting(
        type=typ,
        value=value,
        first_seen=seen,
        last_seen=seen,
        severity=CLICK_SEVERITY[verdict],
        tags=tags,
        comments=f"URL Protect: {log.get('action') or 'clicked'} ({log.get('ttpDefinition') or 'no definition'})",
    )


def attachment_to_sighting(log: Any) -> Sighting:
    """One ``attachmentLogs`` entry (a sandboxed file) as a sha256 sighting; raises InvalidIndicator."""
    if not isinstance(log, dict):
        raise InvalidIndicator("attachment log is not an object")
    verdict = str(log.get("result") or "").lower()
    if verdict not in ATTACHMENT_SEVERITY:
        raise InvalidIndicator(f"result {verdict or 'missing'!r} is not a detection")
    digest = log.get("fileHash")
    if not isinstance(digest, str):
        raise InvalidIndicator("attachment log has no fileHash")
    typ, value = canonicalize("sha256", digest)
    seen = parse_date(log.get("date"))
    sender = log.get("senderAddress")
    return Sighting(
        type=typ,
        value=value,
        first_seen=seen,
        last_seen=seen,
        severity=ATTACHMENT_SEVERITY[verdict],
        tags=("mimecast", "attachment"),
        comments=f"{log.get('fileName') or 'attachment'} from {sender or 'unknown sender'}",
    )


def _parse(rows: Iterable[Any], fn: Any, what: str) -> tuple[list[Sighting], list[Rejected]]:
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for n, row in enumerate(rows):
        try:
            sightings.append(fn(row))
        except InvalidIndicator as exc:
            rejected.append(Rejected(where=f"{what} {n}", reason=str(exc)))
    return sightings, rejected


def parse_click_logs(body: Any) -> tuple[list[Sighting], list[Rejected]]:
    return _parse(_rows(body, "clickLogs"), click_to_sighting, "click log")


def parse_attachment_logs(body: Any) -> tuple[list[Sighting], list[Rejected]]:
    return _parse(_rows(body, "attachmentLogs"), attachment_to_sighting, "attachment log")


def parse_feed(text: str) -> tuple[list[Sighting], list[Rejected]]:
    """The threat-intel feed's ``|``-separated CSV: one md5 and one sha256 sighting per row."""
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for n, row in enumerate(csv.DictReader(io.StringIO(text), delimiter="|"), start=2):
        seen = parse_date(row.get("Timestamp"))
        sender = (row.get("SenderAddress") or "").strip()
        found = False
        for column, typ in (("MD5", "md5"), ("SHA256", "sha256")):
            raw = (row.get(column) or "").strip()
            if not raw:
                continue
            found = True
            try:
                _, value = canonicalize(typ, raw)
            except InvalidIndicator as exc:
                rejected.append(Rejected(where=f"feed line {n}", reason=f"{column}: {exc}"))
                continue
            sightings.append(
                Sighting(
                    type=typ,
                    value=value,
                    first_seen=seen,
                    last_seen=seen,
                    severity="high",
                    tags=("mimecast", "malware"),
                    comments=f"sent from {sender}" if sender else "",
                )
            )
        if not found:
            rejected.append(Rejected(where=f"feed line {n}", reason="no MD5 or SHA256"))
    return sightings, rejected


def next_page_token(body: Any) -> str | None:
    """``meta.pagination.next``: the token for the next log page, None on the last."""
    try:
        token = body["meta"]["pagination"].get("next")
    except (KeyError, TypeError, AttributeError):
        return None
    return token if isinstance(token, str) and token else None


# --- push --------------------------------------------------------------------------------------


def describe(item: ShareItem) -> str:
    via = "ctd from " + ", ".join(item.sources) if item.sources else "ctd"
    return f"{item.comments.strip()} (shared by {via})" if item.comments.strip() else f"shared by {via}"


def managed_url_refusal(item: ShareItem) -> str | None:
    """Why this item cannot be a Managed URL (None if it can)."""
    if item.type not in URL_TYPES:
        return f"Mimecast Managed URLs take URLs and domains, not {item.type}"
    if "#" in item.value:
        return "Mimecast Managed URLs refuse a URL with a fragment (#)"
    return None


def managed_url(
    item: ShareItem, *, action: str = "block", match_type: str | None = None, disable_log_click: bool = False
) -> dict[str, Any]:
    """The ``create-managed-url`` data item: domains match the whole domain, URLs the explicit URL."""
    if action not in ("block", "permit"):
        raise ValueError(f"action must be block or permit, not {action!r}")
    match = match_type or ("explicit" if item.type == "url" else "domain")
    return {
        "url": item.value,
        "action": action,
        "matchType": match,
        "comment": describe(item)[:300],
        "disableLogClick": disable_log_click,
    }


def sender_refusal(item: ShareItem) -> str | None:
    if item.type not in SENDER_TYPES:
        return f"Mimecast managed senders take an email address, not {item.type}"
    return None


def managed_sender(item: ShareItem, *, to: str, action: str = "block") -> dict[str, Any]:
    """The ``permit-or-block-sender`` data item for one (sender, recipient) pair."""
    if action not in ("block", "permit"):
        raise ValueError(f"action must be block or permit, not {action!r}")
    return {"sender": item.value, "to": to, "action": action}


def managed_url_ids(body: Any, values: Iterable[str]) -> dict[str, str]:
    """``{value: id}`` for the values present in a ``get-all-managed-urls`` reply (to delete them)."""
    wanted = set(values)
    out: dict[str, str] = {}
    for entry in body.get("data") or () if isinstance(body, dict) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        domain, path, query = entry.get("domain") or "", entry.get("path") or "", entry.get("queryString") or ""
        port = entry.get("port")
        host = f"{domain}:{port}" if isinstance(port, int) and port > 0 else domain
        rest = f"{host}{path}" + (f"?{query}" if query else "")
        explicit = f"{entry['scheme']}://{rest}" if entry.get("scheme") else rest
        spelled = {domain, explicit}
        for value in wanted & spelled:
            out[value] = entry["id"]
    return out


def _reason(errors: Any) -> str:
    parts = [f"{e.get('message') or e.get('code')}" for e in errors or () if isinstance(e, dict)]
    return "; ".join(parts) or "refused"


def failures(body: Any, sent: list[dict[str, Any]], key: str) -> dict[str, str]:
    """``{value: reason}`` from a reply's ``fail`` list; ``key`` names the value field (url, sender, id).

    A failure naming no item (a request-level error) applies to every item sent.
    """
    out: dict[str, str] = {}
    for entry in body.get("fail") or () if isinstance(body, dict) else ():
        if not isinstance(entry, dict):
            continue
        reason = _reason(entry.get("errors"))
        item = entry.get("key")
        value = item.get(key) if isinstance(item, dict) else None
        if isinstance(value, str):
            out[value] = reason
        else:
            out.update({s[key]: reason for s in sent if isinstance(s.get(key), str) and s[key] not in out})
    return out
