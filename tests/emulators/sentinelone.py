"""A SentinelOne management API emulator: Threat Intelligence IOCs (v2.1) and threats.

SentinelOne's reference lives behind the console login; this follows what the
public material shows (sources and open points in tests/emulators/VENDOR_NOTES.md,
"SentinelOne"). In short:

* ``Authorization: ApiToken <token>`` on every call; a token is scoped to
  accounts/sites and expires (401 ``Authentication Failed``; 403 outside its scope).
* ``POST /web/api/v2.1/threat-intelligence/iocs`` ``{"filter": {"accountIds"|"siteIds"},
  "data": [{type, value, method, source, ...}]}``: types DNS, IPV4, IPV6, MD5, SHA1,
  SHA256, URL (upper case), method EQUALS; an invalid item refuses the whole
  request (400 ``Validation Error`` naming ``data.<i>.<field>``); ``validUntil``
  defaults to +14 d (IPs), +90 d (URL/DNS), +180 d (hashes) and is capped at
  +30/+180/+180 d; at most ``cap`` (1,000,000) IOCs per scope.
* ``GET`` the same path: ``limit`` 1..1000, ``cursor`` -> ``pagination.nextCursor``; filters
  ``type``, ``value``, ``value__in`` (comma-separated), ``name__contains``, ``updatedAt__gte``.
* ``DELETE`` the same path ``{"filter": {accountIds, uuids | value | value__in ...}}``
  -> ``{"data": {"affected": n}}``.
* ``GET /web/api/v2.1/threats`` (``threatInfo.sha1/sha256/md5``), same paging.
* Errors ``{"errors": [{"code", "detail", "title"}]}``; past ``rate_limit`` calls
  per ``rate_window`` seconds a token gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import math
import re
import time
import uuid
from collections.abc import Set
from typing import Any
from urllib.parse import parse_qs

import httpx

from tests.emulators.common import Windows, bearer, clock, json_body

IOCS = "/web/api/v2.1/threat-intelligence/iocs"
THREATS = "/web/api/v2.1/threats"
TYPES = ("DNS", "IPV4", "IPV6", "MD5", "SHA1", "SHA256", "URL")
DAY = 86400
DEFAULT_DAYS = {"IPV4": 14, "IPV6": 14, "URL": 90, "DNS": 90, "MD5": 180, "SHA1": 180, "SHA256": 180}
MAX_DAYS = {"IPV4": 30, "IPV6": 30, "URL": 180, "DNS": 180, "MD5": 180, "SHA1": 180, "SHA256": 180}
EMPTY_FILE = {
    "d41d8cd98f00b204e9800998ecf8427e",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
}
MAX_LIMIT = 1000
_HASH = {"MD5": 32, "SHA1": 40, "SHA256": 64}
_DNS = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)+[A-Za-z0-9-]{2,63}$")


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    t = str(text).strip().replace(" ", "T")
    t = t[:-1] + "+00:00" if t.endswith("Z") else t
    d = dt.datetime.fromisoformat(t)
    return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()


def _err(code: int, title: str, detail: Any = None) -> dict[str, Any]:
    return {"code": code, "detail": detail, "title": title}


class SentinelOneEmulator:
    """One console: API tokens with scopes, IOCs per scope, threats, and the knobs tests turn."""

    def __init__(
        self,
        *,
        token: str = "s1-token",
        account_id: str = "1000000000000000001",
        site_id: str = "2000000000000000001",
        token_ttl: float = 30 * DAY,
        epoch: float | None = None,
        rate_limit: int = 1000,
        rate_window: float = 60,
    ) -> None:
        self.token, self.account_id, self.site_id = token, account_id, site_id
        self.sites = {site_id: account_id}  # site -> its account
        self.token_ttl = token_ttl
        self.tokens: dict[str, dict[str, Any]] = {}
        self.add_token(token, accounts={account_id})
        self.epoch = epoch if epoch is not None else time.time()
        self.cap = 1_000_000
        self.max_batch: int | None = None  # undocumented publicly: a knob
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.windows = Windows()
        self.iocs: dict[str, dict[str, Any]] = {}  # uuid -> IOC
        self.threats: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    # --- test helpers ---------------------------------------------------------------------

    def add_token(self, token: str, *, accounts: Set[str] = frozenset(), sites: Set[str] = frozenset()) -> None:
        self.tokens[token] = {"accounts": set(accounts), "sites": set(sites), "expires": clock() + self.token_ttl}

    def expire_token(self, token: str | None = None) -> None:
        self.tokens[token or self.token]["expires"] = float("-inf")

    def add_threat(
        self, *, sha1: str | None = None, sha256: str | None = None, md5: str | None = None, **info: Any
    ) -> dict[str, Any]:
        n = len(self.threats) + 1
        at = iso(self.epoch - 600 + n)
        threat = {
            "id": f"{1300000000000000000 + n}",
            "agentRealtimeInfo": {"accountId": self.account_id, "siteId": self.site_id},
            "threatInfo": {
                "threatId": f"{1300000000000000000 + n}",
                "sha1": sha1,
                "sha256": sha256,
                "md5": md5,
                "threatName": "evil.exe",
                "classification": "Malware",
                "confidenceLevel": "malicious",
                "analystVerdict": "undefined",
                "incidentStatus": "unresolved",
                "mitigationStatus": "mitigated",
                "filePath": "\\Device\\HarddiskVolume3\\evil.exe",
                "createdAt": at,
                "updatedAt": at,
                **info,
            },
        }
        self.threats.append(threat)
        return threat

    def values(self) -> set[str]:
        return {i["value"] for i in self.iocs.values()}

    # --- transport --------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.handle(request)

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    def _error(self, status: int, code: int, title: str, detail: Any = None, headers: dict[str, str] | None = None):
        return self._reply(status, {"errors": [_err(code, title, detail)]}, headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        token = bearer(request, "ApiToken")
        info = self.tokens.get(token or "")
        if info is None or clock() >= info["expires"]:
            return self._error(401, 4010010, "Authentication Failed")
        wait = self.windows.take(token or "", ((self.rate_limit, self.rate_window),))
        if wait is not None:
            return self._error(
                429, 4290010, "Too Many Requests", "API rate limit exceeded", {"Retry-After": str(math.ceil(wait))}
            )
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode(), keep_blank_values=True).items()}
        try:
            body = json_body(request) if request.content else None
        except ValueError:
            return self._error(400, 4000010, "Validation Error", "Request body is not valid JSON")
        self.calls.append((request.method, request.url.path, query, body))
        if self.fail_next:
            status = self.fail_next.pop(0)
            return self._error(status, status * 10000 + 10, "Server Error" if status >= 500 else "Error")
        route = {
            ("POST", IOCS): self._create,
            ("GET", IOCS): self._list_iocs,
            ("DELETE", IOCS): self._delete,
            ("GET", THREATS): self._list_threats,
        }.get((request.method, request.url.path))
        if route is None:
            return self._error(404, 4040010, "Not Found")
        return route(info, query, body)

    def _scope(self, info: dict[str, Any], flt: dict[str, Any]) -> tuple[str, str] | httpx.Response:
        """The one scope a request names, checked against the token's; or the error reply."""
        accounts, sites = flt.get("accountIds") or [], flt.get("siteIds") or []
        if isinstance(accounts, str):
            accounts = accounts.split(",")
        if isinstance(sites, str):
            sites = sites.split(",")
        if len(accounts) + len(sites) != 1:
            return self._error(400, 4000010, "Validation Error", "filter: give exactly one of accountIds or siteIds")
        if (
            accounts
            and accounts[0] not in info["accounts"]
            or sites
            and sites[0] not in info["sites"] | {s for s, a in self.sites.items() if a in info["accounts"]}
        ):
            return self._error(403, 4030010, "Insufficient permissions", "The token has no access to this scope")
        return ("account", accounts[0]) if accounts else ("site", sites[0])

    # --- IOCs -----------------------------------------------------------------------------------

    def _reason(self, i: int, ioc: Any) -> str | None:
        if not isinstance(ioc, dict):
            return f"data.{i}: must be an object"
        for key in ("type", "value", "method", "source"):
            if not isinstance(ioc.get(key), str) or not ioc[key]:
                return f"data.{i}.{key}: Missing data for required field."
        typ, value = ioc["type"], ioc["value"]
        if typ not in TYPES:
            return f"data.{i}.type: Must be one of: {', '.join(TYPES)}."
        if ioc["method"] != "EQUALS":
            return f"data.{i}.method: Must be one of: EQUALS."
        if typ in _HASH:
            if len(value) != _HASH[typ] or not re.fullmatch(r"[0-9a-fA-F]+", value):
                return f"data.{i}.value: Invalid {typ} value"
            if value.lower() in EMPTY_FILE:
                return f"data.{i}.value: hashes_empty_file"
        elif typ in ("IPV4", "IPV6"):
            try:
                ok = isinstance(
                    ipaddress.ip_address(value), ipaddress.IPv4Address if typ == "IPV4" else ipaddress.IPv6Address
                )
            except ValueError:
                ok = False
            if not ok:
                return f"data.{i}.value: Invalid {typ} value"
        elif typ == "DNS" and not _DNS.match(value):
            return f"data.{i}.value: Invalid DNS value"
        elif typ == "URL" and (any(c.isspace() for c in value) or "." not in value):
            return f"data.{i}.value: Invalid URL value"
        if ioc.get("validUntil") is not None:
            try:
                parse_time(ioc["validUntil"])
            except ValueError:
                return f"data.{i}.validUntil: Not a valid datetime."
        return None

    def _create(self, info: dict[str, Any], query: dict[str, str], body: Any) -> httpx.Response:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("data"), list)
            or not isinstance(body.get("filter"), dict)
        ):
            return self._error(400, 4000010, "Validation Error", "body must be {filter: {...}, data: [...]}")
        scope = self._scope(info, body["filter"])
        if isinstance(scope, httpx.Response):
            return scope
        items = body["data"]
        if self.max_batch is not None and len(items) > self.max_batch:
            return self._error(400, 4000010, "Validation Error", f"data: at most {self.max_batch} items")
        reasons = [r for i, ioc in enumerate(items) if (r := self._reason(i, ioc))]
        if reasons:  # one bad item refuses the whole request
            return self._reply(400, {"errors": [_err(4000010, "Validation Error", r) for r in reasons]})
        in_scope = [x for x in self.iocs.values() if x["_scope"] == scope]
        fresh = {(x["type"], x["value"].lower()) for x in in_scope}
        new = {(x["type"], x["value"].lower()) for x in items} - fresh
        if len(in_scope) + len(new) > self.cap:
            return self._error(400, 4000010, "Validation Error", f"IOC limit of {self.cap} reached for this scope")
        now = self.epoch
        out = []
        for ioc in items:
            typ = ioc["type"]
            limit = now + MAX_DAYS[typ] * DAY
            until = parse_time(ioc["validUntil"]) if ioc.get("validUntil") else now + DEFAULT_DAYS[typ] * DAY
            old = next((x for x in in_scope if (x["type"], x["value"].lower()) == (typ, ioc["value"].lower())), None)
            entry = {
                **(old or {}),
                **{k: v for k, v in ioc.items() if not k.startswith("_")},
                "uuid": old["uuid"] if old else str(uuid.uuid4()),
                "_scope": scope,
                "scope": scope[0],
                "scopeId": scope[1],
                "validUntil": iso(min(until, limit)),
                "creationTime": old["creationTime"] if old else iso(now),
                "updatedAt": iso(now),
            }
            self.iocs[entry["uuid"]] = entry
            out.append(_public(entry))
        return self._reply(200, {"data": out})

    def _page(self, rows: list[dict[str, Any]], query: dict[str, str]) -> httpx.Response:
        try:
            limit = int(query.get("limit") or 100)
            start = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit: Must be between 1 and {MAX_LIMIT}.")
        except (ValueError, TypeError) as exc:
            return self._error(400, 4000010, "Validation Error", str(exc))
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None
        return self._reply(200, {"data": page, "pagination": {"nextCursor": cursor, "totalItems": len(rows)}})

    def _list_iocs(self, info: dict[str, Any], query: dict[str, str], body: Any) -> httpx.Response:
        scope = self._scope(info, query)
        if isinstance(scope, httpx.Response):
            return scope
        rows = [x for x in self.iocs.values() if x["_scope"] == scope]
        if query.get("type"):
            rows = [x for x in rows if x["type"] in query["type"].split(",")]
        if query.get("value"):
            rows = [x for x in rows if x["value"] == query["value"]]
        if query.get("value__in"):  # Choice: the DELETE filter's value__in, as a comma-separated query parameter
            wanted = set(query["value__in"].split(","))
            rows = [x for x in rows if x["value"] in wanted]
        if query.get("name__contains"):
            rows = [x for x in rows if query["name__contains"] in (x.get("name") or "")]
        if query.get("updatedAt__gte"):
            rows = [x for x in rows if parse_time(x["updatedAt"]) >= parse_time(query["updatedAt__gte"])]
        rows.sort(key=lambda x: (x["creationTime"], x["uuid"]))
        return self._page([_public(x) for x in rows], query)

    def _delete(self, info: dict[str, Any], query: dict[str, str], body: Any) -> httpx.Response:
        flt = body.get("filter") if isinstance(body, dict) else None
        if not isinstance(flt, dict):
            return self._error(400, 4000010, "Validation Error", "body must be {filter: {...}}")
        scope = self._scope(info, flt)
        if isinstance(scope, httpx.Response):
            return scope
        selectors = {k: flt[k] for k in ("uuids", "value", "value__in", "type") if flt.get(k)}
        if not selectors:  # never "delete everything in the scope" by accident
            return self._error(400, 4000010, "Validation Error", "filter: give uuids, value, value__in or type")
        doomed = [
            x
            for x in self.iocs.values()
            if x["_scope"] == scope
            and ("uuids" not in selectors or x["uuid"] in selectors["uuids"])
            and ("value" not in selectors or x["value"] == selectors["value"])
            and ("value__in" not in selectors or x["value"] in selectors["value__in"])
            and ("type" not in selectors or x["type"] == selectors["type"])
        ]
        for x in doomed:
            del self.iocs[x["uuid"]]
        return self._reply(200, {"data": {"affected": len(doomed)}})

    # --- threats ----------------------------------------------------------------------------------

    def _list_threats(self, info: dict[str, Any], query: dict[str, str], body: Any) -> httpx.Response:
        rows = [
            t
            for t in self.threats
            if t["agentRealtimeInfo"]["accountId"] in info["accounts"]
            or t["agentRealtimeInfo"]["siteId"] in info["sites"]
        ]
        for key, field in (("createdAt__gte", "createdAt"), ("updatedAt__gte", "updatedAt")):
            if query.get(key):
                rows = [t for t in rows if parse_time(t["threatInfo"][field]) >= parse_time(query[key])]
        return self._page(rows, query)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def standalone(opts: Any) -> tuple[SentinelOneEmulator, dict[str, Any]]:
    """A console for ``python -m tests.emulators.sentinelone``: demo IOCs and threats."""
    emu = SentinelOneEmulator(rate_limit=opts.rate_limit or 1000)
    for i in range(opts.seed):
        emu.add_threat(sha256=f"{i + 1:064x}", sha1=f"{i + 1:040x}")
    if opts.seed:
        emu._create(
            emu.tokens[emu.token],
            {},
            {
                "filter": {"accountIds": [emu.account_id]},
                "data": [
                    {"type": "IPV4", "value": f"192.0.2.{i + 1}", "method": "EQUALS", "source": "console"}
                    for i in range(opts.seed)
                ],
            },
        )
    emu.windows.calls.clear()
    return emu, {
        "header": "Authorization: ApiToken <token>",
        "token": emu.token,
        "accountId": emu.account_id,
        "siteId": emu.site_id,
    }


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("sentinelone", standalone))
