"""Pure mapping for the ``netskope`` adapter: alerts to sightings, tenant replies to results.

No I/O here: the adapter (``netskope.py``) fetches and sends, these functions
decide what a page of alerts means, where the iterator goes next, what a
rejected URL list update says, and what a file hash list body holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ctd.model import SEVERITIES, InvalidIndicator, Rejected, Sighting, canonicalize

ALERT_TYPES = ("malware", "malsite")

# A tenant reports alerts with some minutes of delay, so an empty page whose
# high-water mark is this close to "now" means the iterator has caught up.
CAUGHT_UP_LAG = 600

# updateFileHashList refuses an empty list; the reference system sends this filler.
EMPTY_HASH_LIST_FILLER = "f" * 64

NO_CHANGE = "duplicate request, no change in file hashes"

_INDEX_OK = re.compile(r"[^A-Za-z0-9_-]")


def default_index(plugin: str) -> str:
    """An iterator index unique to the plugin: two consumers of one index would steal each other's pages."""
    return "ctd_" + _INDEX_OK.sub("_", plugin)


def epoch_seconds(raw: Any) -> int | None:
    """Alert timestamps are epoch seconds; some exports give milliseconds."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        t = float(raw)
    except ValueError:
        return None
    if t <= 0:
        return None
    if t > 1e11:  # milliseconds
        t /= 1000
    return int(t)


def _severity(alert: dict) -> str:
    sev = alert.get("severity")
    if isinstance(sev, str) and sev.strip().lower() in SEVERITIES:
        return sev.strip().lower()
    return "unknown"


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, list):
        return ", ".join(str(x).strip() for x in v if str(x).strip())
    return "" if v is None else str(v)


def alert_comment(kind: str, alert: dict, tenant: str) -> str:
    """The alert context a reader needs to judge the indicator (tenant, file, malware, category)."""
    parts = [f"Netskope {tenant} {kind} alert"]
    if name := _text(alert.get("alert_name")):
        parts.append(name)
    if kind == "malware":
        for label, key in (("file", "object"), ("malware", "malware_name"), ("malware type", "malware_type")):
            if value := _text(alert.get(key)):
                parts.append(f"{label}: {value}")
    elif category := _text(alert.get("malsite_category")):
        parts.append(f"category: {category}")
    return "; ".join(parts)


def _values(alert: dict, keys: Iterable[str]) -> list[str]:
    """The distinct non-empty values of ``keys`` (``md5`` and ``local_md5`` may differ: keep both)."""
    out: list[str] = []
    for key in keys:
        v = alert.get(key)
        if isinstance(v, str) and v.strip() and v.strip().lower() not in (x.lower() for x in out):
            out.append(v.strip())
    return out


def alert_sightings(
    kind: str,
    alerts: Iterable[Any],
    tenant: str,
    hash_types: Iterable[str] = ("md5", "sha256"),
    where: str = "",
) -> tuple[list[Sighting], list[Rejected]]:
    """Map one page of ``malware`` or ``malsite`` alerts to sightings (and what did not validate)."""
    wanted = set(hash_types)
    sightings: list[Sighting] = []
    rejected: list[Rejected] = []
    for n, alert in enumerate(alerts):
        here = f"{where}{kind} alert {n}"
        if not isinstance(alert, dict):
            rejected.append(Rejected(where=here, reason="not a JSON object"))
            continue
        if kind == "malware":
            found = [(t, v) for t in ("md5", "sha256") for v in _values(alert, (t, "local_" + t))]
            pairs = [(t, v) for t, v in found if t in wanted]
        else:
            found = pairs = [("url", v) for v in _values(alert, ("url",))]
        if not found:
            rejected.append(Rejected(where=here, reason=f"no {'url' if kind == 'malsite' else 'file hash'}"))
            continue
        ts = epoch_seconds(alert.get("timestamp"))
        meta: dict[str, Any] = {
            "severity": _severity(alert),
            "comments": alert_comment(kind, alert, tenant),
            "first_seen": ts,
            "last_seen": ts,
        }
        for typ, raw in pairs:
            try:
                typ, value = canonicalize(typ, raw)
            except InvalidIndicator as exc:
                rejected.append(Rejected(where=f"{here} ({typ})", reason=str(exc)))
                continue
            sightings.append(Sighting(type=typ, value=value, **meta))
    return sightings, rejected


# --- the data-export iterator ----------------------------------------------------


def resume_operation(sub: Any, kind: str, index: str) -> str | None:
    """The first operation of a resumed pull for ``kind``, from the committed sub-checkpoint.

    A committed ``seek`` means the epoch operation may not have reached the
    tenant: repeat it (it is idempotent). Otherwise a ``next`` may have been
    answered but its page not committed: ``resend`` fetches it again (at worst
    a committed page is re-ingested, which changes nothing).
    """
    if not isinstance(sub, dict) or sub.get("index") != index or sub.get("type") != kind:
        return None
    seek = sub.get("seek")
    if isinstance(seek, int) and not isinstance(seek, bool):
        return str(seek)
    return "resend"


def page_ends_pull(result: list, hwm: Any, previous_hwm: int | None, now: int) -> bool:
    """Does this page end the pull of one alert type?

    A page with alerts never does. An empty page ends it unless its high-water
    mark shows the iterator is still behind (epoch seeks are served in time
    windows, and a quiet window is empty) and still moving.
    """
    if result:
        return False
    mark = epoch_seconds(hwm)
    if mark is None or mark >= now - CAUGHT_UP_LAG:
        return True
    return previous_hwm is not None and mark <= previous_hwm


# --- pushing -----------------------------------------------------------------------


def rejected_values(body: Any, sent: Iterable[str]) -> dict[str, str]:
    """Values a 400 from a URL list update names as invalid, with the tenant's reason.

    ``message`` is a list whose items name the value first (``[value, reason]``
    or ``{"value":..., "reason":...}``); values we did not send are ignored.
    """
    sent_set = set(sent)
    out: dict[str, str] = {}
    msg = body.get("message") if isinstance(body, dict) else None
    if not isinstance(msg, list):
        return out
    for item in msg:
        value: Any = None
        reason: Any = None
        if isinstance(item, (list, tuple)) and item:
            value = item[0]
            reason = item[1] if len(item) > 1 else None
        elif isinstance(item, dict):
            value = item.get("value") or item.get("url")
            reason = item.get("reason") or item.get("error")
        if isinstance(value, str) and value in sent_set:
            out[value] = f"rejected by Netskope: {reason}" if reason else "rejected by Netskope as invalid"
    return out


def error_text(body: Any, fallback: str = "") -> str:
    """A short human text from a tenant error body (``message``, ``errors``, ``error``)."""
    if isinstance(body, dict):
        for key in ("message", "errors", "error"):
            v = body.get(key)
            if isinstance(v, str) and v:
                return v[:300]
            if isinstance(v, list) and v:
                return "; ".join(str(x) for x in v)[:300]
    return fallback


def find_list(lists: Any, name: str) -> dict | None:
    """The entry of the URL list called ``name`` in a ``GET /api/v2/policy/urllist`` reply."""
    if isinstance(lists, dict):  # tolerate a wrapped array
        lists = lists.get("data", lists.get("result"))
    if not isinstance(lists, list):
        return None
    for entry in lists:
        if isinstance(entry, dict) and entry.get("name") == name:
            ident = entry.get("id")
            if isinstance(ident, (int, str)) and not isinstance(ident, bool):
                return entry
    return None


def list_urls(entry: Any) -> list[str]:
    """The URLs of one URL list entry (``data.urls``)."""
    data = entry.get("data") if isinstance(entry, dict) else None
    urls = data.get("urls") if isinstance(data, dict) else None
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


def remaining_urls(current: Iterable[str], withdrawn: Iterable[str], placeholder: str) -> list[str]:
    """The list after a retraction (order kept); never empty, since the tenant refuses an empty list."""
    gone = set(withdrawn)
    keep = [u for u in current if u not in gone]
    return keep or [placeholder]


def hash_list_body(values: Iterable[str]) -> str:
    """``list`` of updateFileHashList: comma-separated, the filler when empty."""
    return ",".join(values) or EMPTY_HASH_LIST_FILLER


def hash_list_outcome(body: Any) -> tuple[bool, str]:
    """(success, text) of an updateFileHashList reply; "no change" counts as success."""
    if not isinstance(body, dict):
        return False, "unexpected reply"
    if body.get("status") == "success":
        return True, "updated"
    errors = body.get("errors")
    texts = [str(e) for e in errors] if isinstance(errors, list) else [str(errors or body.get("errorCode", ""))]
    if any(NO_CHANGE in t.lower() for t in texts):
        return True, "no change"
    return False, "; ".join(t for t in texts if t)[:300] or "error"


def is_auth_error(body: Any) -> bool:
    """A v1 reply saying the token is wrong (v1 may say so with HTTP 200)."""
    if not isinstance(body, dict) or body.get("status") != "error":
        return False
    text = f"{body.get('errorCode', '')} {error_text(body)}".lower()
    return "authoriz" in text or "invalid token" in text
