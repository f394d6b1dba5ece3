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
POLICY_TYPES = ("email", "domain", "hostname")  # blocked sender policies: an address or a whole domain
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


MARK = "shared by ctd"  # in the comment or description of every entry ctd creates


def describe(item: ShareItem, limit: int = 300) -> str:
    """The item's comments and ``shared by ctd from <sources>``, at most ``limit`` characters.

    The comments are cut, not the mark: it tells ctd's entries from the others'.
    """
    via = "ctd from " + ", ".join(item.sources) if item.sources else "ctd"
    mark = f"shared by {via}"[: limit - 3]
    text = item.comments.strip()
    if not text:
        return mark
    room = limit - len(mark) - 3
    return f"{text[:room]} ({mark})" if room > 0 else mark


def is_ctd(text: Any) -> bool:
    """Whether a comment or description carries ctd's mark."""
    return isinstance(text, str) and MARK in text


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
        "comment": describe(item),
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


def sender_policy_refusal(item: ShareItem) -> str | None:
    """Why this item cannot be a blocked sender policy (None if it can)."""
    if item.type not in POLICY_TYPES:
        return f"Mimecast blocked sender policies take an email address or a domain, not {item.type}"
    return None


def blocked_sender_policy(item: ShareItem, *, from_part: str = "envelope_from") -> dict[str, Any]:
    """The ``create-policy`` data item blocking one sender address or sender domain, for everyone.

    The policy is eternal: ctd deletes it when the IoC leaves (a ``toDate`` would
    end it early when the IoC is seen again and lives on).
    """
    sender = (
        {"type": "individual_email_address", "emailAddress": item.value}
        if item.type == "email"
        else {"type": "email_domain", "emailDomain": item.value}
    )
    policy: dict[str, Any] = {
        "description": describe(item, 200),
        "fromPart": from_part,
        "from": sender,
        "to": {"type": "everyone"},
        "fromEternal": True,
        "toEternal": True,
    }
    return {"option": "block_sender", "policy": policy}


def policy_sender(entry: Any) -> str | None:
    """The sender (address or domain) a blocked sender policy names; None for other policies."""
    policy = entry.get("policy") if isinstance(entry, dict) else None
    src = policy.get("from") if isinstance(policy, dict) else None
    if not isinstance(src, dict):
        return None
    value = src.get("emailAddress") or src.get("emailDomain")
    return value.lower() if isinstance(value, str) else None


def spelled(entry: dict[str, Any]) -> str:
    """A Managed URL entry's URL as it was sent (``scheme://domain[:port]path?query``, or the bare domain)."""
    domain, path, query = entry.get("domain") or "", entry.get("path") or "", entry.get("queryString") or ""
    port = entry.get("port")
    host = f"{domain}:{port}" if isinstance(port, int) and port > 0 else domain
    rest = f"{host}{path}" + (f"?{query}" if query else "")
    return f"{entry['scheme']}://{rest}" if entry.get("scheme") else rest


def managed_entries(body: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The entries of a ``get-all-managed-urls`` reply by (URL as sent, matchType): what a create collides with."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in body.get("data") or () if isinstance(body, dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            out[(spelled(entry), str(entry.get("matchType") or "explicit"))] = entry
    return out


def own_blocks(body: Any) -> tuple[set[str], set[str]]:
    """(URLs, domains) that ctd's own Managed URLs block: clicks on them are ctd's blocks at work, not news."""
    urls: set[str] = set()
    domains: set[str] = set()
    for (url, match), entry in managed_entries(body).items():
        if is_ctd(entry.get("comment")):
            if match == "domain":
                domains.add(str(entry.get("domain") or "").lower())
            else:
                urls.add(url)
    return urls, domains


def _fail_entries(body: Any) -> list[dict[str, Any]]:
    return [f for f in (body.get("fail") or () if isinstance(body, dict) else ()) if isinstance(f, dict)]


def fail_reasons(body: Any, sent: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """``{value: reason}`` from a reply's ``fail`` list; ``sent`` pairs each value with the item sent for it.

    A failed entry repeats the item sent as its ``key``; one that names no item
    (a request-level error) applies to every item sent.
    """
    out: dict[str, str] = {}
    for entry in _fail_entries(body):
        reason = _reason(entry.get("errors"))
        hits = [v for v, item in sent if item == entry.get("key")]
        for value in hits or ([v for v, _ in sent] if not isinstance(entry.get("key"), dict) else []):
            out.setdefault(value, reason)
    return out


def created_ids(body: Any, sent: list[tuple[str, dict[str, Any]]], value_of: Any) -> dict[str, str]:
    """``{value: id}`` for what a create call made: the reply's ``data`` follows the accepted items in order.

    ``value_of(entry)`` reads the value back from a reply entry when the counts disagree.
    """
    failed = [f.get("key") for f in _fail_entries(body)]
    accepted = [v for v, item in sent if item not in failed]
    data = [d for d in (body.get("data") or () if isinstance(body, dict) else ()) if isinstance(d, dict)]
    if len(data) == len(accepted):
        return {v: d["id"] for v, d in zip(accepted, data, strict=True) if isinstance(d.get("id"), str)}
    out: dict[str, str] = {}
    for d in data:
        value = value_of(d)
        if isinstance(value, str) and isinstance(d.get("id"), str):
            out[value] = d["id"]
    return out


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
