"""A Microsoft Defender for Endpoint emulator (indicators + alerts API, Entra ID token endpoint).

Written from the MicrosoftDocs/defender-docs API pages; sources and open points in
tests/emulators/VENDOR_NOTES.md ("Microsoft Defender for Endpoint"). In short:

* ``POST /{tenant}/oauth2/v2.0/token`` (the login.microsoftonline.com path; form
  ``client_id``, ``client_secret``, ``grant_type=client_credentials``,
  ``scope=https://api.securitycenter.microsoft.com/.default``) -> ``{token_type,
  expires_in: 3599, access_token}``; Entra errors ``{error, error_description
  (AADSTS...), error_codes, ...}``.
* ``GET /api/indicators`` (OData ``$filter``/``$top`` <= 10,000/``$skip``,
  ``@odata.nextLink`` while more remain), ``POST /api/indicators`` (one),
  ``POST /api/indicators/import`` (``{"Indicators": [...]}``, at most 500, a
  per-item ``{id, indicator, isFailed, failureReason}``), ``POST
  /api/indicators/BatchDelete`` (``{"IndicatorIds": [...]}`` -> 204 / 400 / 403 / 404),
  ``DELETE /api/indicators/{id}``, ``GET /api/alerts`` (``$expand=evidence``).
* At most 15,000 active (unexpired) indicators per tenant. Apps with
  ``Ti.ReadWrite`` see only the indicators they created; ``Ti.ReadWrite.All`` all.
* Errors ``{"error": {"code", "message", "target"}}``; per-endpoint rate limits
  (100/min and 1,500/hour; import and BatchDelete 30/min) answer 429 with ``Retry-After`` seconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import math
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.emulators.common import Tokens, Windows, bearer, form, json_body

SCOPES = (
    "https://api.securitycenter.microsoft.com/.default",
    "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
)
TYPES = ("FileSha1", "FileSha256", "FileMd5", "CertificateThumbprint", "IpAddress", "DomainName", "Url")
ACTIONS = ("Alert", "Warn", "Block", "Audit", "BlockAndRemediate", "AlertAndBlock", "Allowed")
SEVERITIES = ("Informational", "Low", "Medium", "High")
MAX_BATCH, MAX_ACTIVE, MAX_TOP = 500, 15_000, 10_000
LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "indicators.list": ((100, 60), (1500, 3600)),
    "indicators.submit": ((100, 60), (1500, 3600)),
    "indicators.import": ((30, 60),),
    "indicators.delete": ((30, 60), (1500, 3600)),
    "alerts.list": ((100, 60), (1500, 3600)),
}
INDICATOR_FILTERS = {
    "application",
    "createdByDisplayName",
    "expirationTime",
    "generateAlert",
    "title",
    "rbacGroupNames",
    "rbacGroupIds",
    "indicatorValue",
    "indicatorType",
    "creationTimeDateTimeUtc",
    "createdBy",
    "action",
    "severity",
}
ALERT_FILTERS = {
    "alertCreationTime",
    "lastUpdateTime",
    "incidentId",
    "investigationId",
    "id",
    "assignedTo",
    "detectionSource",
    "lastEventTime",
    "status",
    "severity",
    "category",
}
_HASH_LEN = {"FileSha1": 40, "FileSha256": 64, "FileMd5": 32, "CertificateThumbprint": 40}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)+[A-Za-z0-9-]{2,63}$")
_TERM = re.compile(r"^\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(.+?)\s*$", re.I)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def parse_time(text: str) -> float:
    t = text.strip()
    t = t[:-1] + "+00:00" if t.endswith("Z") else t
    t = re.sub(r"(\.\d{6})\d+", r"\1", t)  # .NET writes 7 fraction digits
    d = dt.datetime.fromisoformat(t)
    return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()


# --- OData $filter: what the docs' examples use (eq/ne/ge/gt/le/lt joined by and) -----------


def parse_filter(text: str, allowed: set[str]) -> list[tuple[str, str, Any]]:
    terms = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.I) if text.strip() else []:
        m = _TERM.match(part)
        if not m:
            raise ValueError(f"cannot parse filter term {part!r}")
        field, op, raw = m.group(1), m.group(2).lower(), m.group(3)
        if field not in allowed:
            raise ValueError(f"filtering on {field} is not supported")
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            value: Any = raw[1:-1].replace("''", "'")
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lower() == "null":
            value = None
        else:
            value = parse_time(raw) if re.match(r"^\d{4}-\d{2}-\d{2}", raw) else float(raw)
        terms.append((field, op, value))
    return terms


def matches(entity: dict[str, Any], terms: list[tuple[str, str, Any]]) -> bool:
    for field, op, want in terms:
        have = entity.get(field)
        if isinstance(want, float) and isinstance(have, str):
            have = parse_time(have)
        if isinstance(have, list):
            ok = (want in have) if op == "eq" else (want not in have)
        elif op in ("eq", "ne"):
            same = have.lower() == want.lower() if isinstance(have, str) and isinstance(want, str) else have == want
            ok = same if op == "eq" else not same
        else:
            if have is None or want is None:
                return False
            ok = {"ge": have >= want, "gt": have > want, "le": have <= want, "lt": have < want}[op]
        if not ok:
            return False
    return True


class DefenderEmulator:
    """One tenant: registered apps, indicators, alerts, and the knobs tests turn."""

    def __init__(
        self,
        *,
        tenant: str = "tenant-1",
        client_id: str = "mde-app",
        client_secret: str = "mde-secret",
        epoch: float | None = None,
    ) -> None:
        self.tenant = tenant
        self.client_id, self.client_secret = client_id, client_secret
        self.apps: dict[str, dict[str, Any]] = {
            client_id: {"secret": client_secret, "roles": {"Ti.ReadWrite.All", "Alert.Read.All"}, "name": "ctd"}
        }
        self.tokens = Tokens(3599, "mde-token")
        self.owner: dict[str, str] = {}
        self.windows = Windows()
        self.limits = dict(LIMITS)
        self.epoch = epoch if epoch is not None else time.time()
        self.max_active = MAX_ACTIVE
        self.page_size = MAX_TOP  # rows per page when the client gives no $top
        self.indicators: dict[str, dict[str, Any]] = {}
        self.alerts: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.calls: list[tuple[str, str, Any]] = []
        self._ids = itertools.count(1001)

    # --- test helpers -----------------------------------------------------------------

    def add_app(self, client_id: str, secret: str, roles: set[str], name: str = "other") -> None:
        self.apps[client_id] = {"secret": secret, "roles": set(roles), "name": name}

    def add_alert(self, **fields: Any) -> dict[str, Any]:
        n = len(self.alerts) + 1
        alert = {
            "id": f"da{n:018d}_{n}",
            "incidentId": n,
            "investigationId": None,
            "assignedTo": None,
            "severity": "Medium",
            "status": "New",
            "classification": None,
            "determination": None,
            "detectionSource": "WindowsDefenderAv",
            "category": "Malware",
            "threatFamilyName": None,
            "title": "Malware was detected",
            "description": "",
            "alertCreationTime": iso(self.epoch - 300),
            "firstEventTime": iso(self.epoch - 400),
            "lastEventTime": iso(self.epoch - 350),
            "lastUpdateTime": iso(self.epoch - 200),
            "resolvedTime": None,
            "machineId": "m" * 40,
            "computerDnsName": "host.corp.example",
            "rbacGroupName": None,
            "aadTenantId": self.tenant,
            "threatName": None,
            "mitreTechniques": [],
            "relatedUser": None,
            "comments": [],
            "evidence": [],
            **fields,
        }
        self.alerts.append(alert)
        return alert

    def values(self) -> set[str]:
        return {i["indicatorValue"] for i in self.indicators.values()}

    def values_by(self, app: str) -> set[str]:
        """The values of the indicators ``app`` (a client id) created."""
        return {i["indicatorValue"] for i in self.indicators.values() if i["createdBy"] == app}

    def add_indicator(self, value: str, kind: str, *, action: str = "Audit", app: str = "portal-user") -> str:
        """An indicator someone else created (an analyst in the portal, by default); its id."""
        if app not in self.apps:
            self.add_app(app, "-", {"Ti.ReadWrite.All"}, name="user@corp.example")
        body = {"indicatorValue": value, "indicatorType": kind, "action": action, "title": "by hand"}
        return self._save({**body, "description": "added in the portal", "generateAlert": True}, app)["id"]

    # What ``python -m tests.emulators.defender --control`` lets a test call over HTTP.
    CONTROL = ("add_alert", "add_indicator", "values", "values_by")

    def active(self) -> int:
        return sum(
            1
            for i in self.indicators.values()
            if not i["expirationTime"] or parse_time(i["expirationTime"]) > self.epoch
        )

    # --- transport --------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.handle(request)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(
            status, json={"error": {"code": code, "message": message, "target": str(uuid.uuid4())}}, headers=headers
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)
        if m and request.method == "POST":
            return self._token(m.group(1), form(request))
        token = bearer(request)
        if not self.tokens.valid(token):
            return self._error(401, "Unauthorized", "Unauthorized (invalid or expired authorization header)")
        app = self.owner[token or ""]
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode(), keep_blank_values=True).items()}
        route = self._route(request.method, path)
        if route is None:
            return self._error(404, "NotFound", f"Resource {path} was not found")
        group, fn, roles = route
        if not self.apps[app]["roles"] & roles:
            return self._error(403, "Forbidden", "Forbidden (valid token but insufficient permission for the action)")
        wait = self.windows.take(f"{app}:{group}", self.limits[group])
        if wait is not None:
            return self._error(
                429,
                "TooManyRequests",
                "Response represents reaching quota limit",
                {"Retry-After": str(math.ceil(wait))},
            )
        try:
            body = json_body(request) if request.method == "POST" else None
        except ValueError:
            return self._error(400, "InvalidRequestBody", "Request body is incorrect")
        self.calls.append((request.method, path, body))
        if self.fail_next:
            status = self.fail_next.pop(0)
            return self._error(status, "InternalServerError" if status >= 500 else "BadRequest", "injected failure")
        return fn(request, query, body, app)

    def _route(self, method: str, path: str) -> tuple[str, Any, set[str]] | None:
        ti, alerts = {"Ti.ReadWrite", "Ti.ReadWrite.All"}, {"Alert.Read.All", "Alert.ReadWrite.All"}
        if path == "/api/indicators" and method == "GET":
            return "indicators.list", self._list_indicators, ti
        if path == "/api/indicators" and method == "POST":
            return "indicators.submit", self._submit, ti
        if path == "/api/indicators/import" and method == "POST":
            return "indicators.import", self._import, ti
        if path == "/api/indicators/BatchDelete" and method == "POST":
            return "indicators.delete", self._batch_delete, ti
        if re.fullmatch(r"/api/indicators/[^/]+", path) and method == "DELETE":
            return "indicators.submit", self._delete_one, ti
        if path == "/api/alerts" and method == "GET":
            return "alerts.list", self._list_alerts, alerts
        return None

    def _token(self, tenant: str, f: dict[str, str]) -> httpx.Response:
        def aad(status: int, error: str, code: int, text: str) -> httpx.Response:
            return httpx.Response(
                status,
                json={
                    "error": error,
                    "error_description": f"AADSTS{code}: {text}",
                    "error_codes": [code],
                    "timestamp": "2026-01-01 00:00:00Z",
                    "trace_id": str(uuid.uuid4()),
                    "correlation_id": str(uuid.uuid4()),
                },
            )

        if tenant != self.tenant:
            return aad(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if f.get("grant_type") != "client_credentials":
            return aad(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        app = self.apps.get(f.get("client_id", ""))
        if app is None:
            return aad(400, "unauthorized_client", 700016, "Application not found in the directory.")
        if app["secret"] != f.get("client_secret"):
            return aad(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if f.get("scope") not in SCOPES:
            return aad(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
        token = self.tokens.issue()
        self.owner[token] = f["client_id"]
        return httpx.Response(
            200, json={"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    # --- indicators -------------------------------------------------------------------------

    def _visible(self, app: str) -> list[dict[str, Any]]:
        everything = "Ti.ReadWrite.All" in self.apps[app]["roles"]
        return [i for i in self.indicators.values() if everything or i["createdBy"] == app]

    def _page(
        self, request: httpx.Request, query: dict[str, str], rows: list[dict[str, Any]], allowed: set[str], context: str
    ) -> httpx.Response:
        try:
            terms = parse_filter(query.get("$filter", ""), allowed)
            top = int(query.get("$top") or self.page_size)
            skip = int(query.get("$skip") or 0)
            if not 0 < top <= MAX_TOP or skip < 0:
                raise ValueError(f"$top must be between 1 and {MAX_TOP}")
        except ValueError as exc:
            return self._error(400, "ODataError", f"Invalid OData URI query: {exc}")
        picked = [r for r in rows if matches(r, terms)]
        body: dict[str, Any] = {
            "@odata.context": f"https://api.securitycenter.microsoft.com/api/$metadata#{context}",
            "value": picked[skip : skip + top],
        }
        if skip + top < len(picked):
            base = urlsplit(str(request.url))
            body["@odata.nextLink"] = f"{base.scheme}://{base.netloc}{base.path}?" + urlencode(
                {**query, "$top": str(top), "$skip": str(skip + top)}
            )
        return httpx.Response(200, json=body)

    def _list_indicators(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        return self._page(request, query, self._visible(app), INDICATOR_FILTERS, "Indicators")

    def _reason(self, ind: Any) -> tuple[str, str] | None:
        """(code, message) why an indicator is refused, as the common-errors table words it."""
        if not isinstance(ind, dict):
            return "InvalidRequestBody", "Invalid request body."
        for key in ("indicatorValue", "indicatorType", "action", "title", "description"):
            if not isinstance(ind.get(key), str) or not ind[key].strip():
                return "MissingRequiredParameter", f"Parameter {key} is missing."
        typ, value, action = ind["indicatorType"], ind["indicatorValue"], ind["action"]
        if typ not in TYPES:
            return "InvalidInput", f"Invalid input indicatorType {typ}."
        if action not in ACTIONS:
            return "InvalidInput", f"Invalid input action {action}."
        if ind.get("severity") is not None and ind["severity"] not in SEVERITIES:
            return "InvalidInput", f"Invalid input severity {ind['severity']}."
        if action == "Audit" and ind.get("generateAlert") is not True:
            return "InvalidInput", "Invalid input generateAlert: it must be true for action Audit."
        if ind.get("expirationTime") is not None:
            try:
                parse_time(str(ind["expirationTime"]))
            except ValueError:
                return "InvalidInput", f"Invalid input expirationTime {ind['expirationTime']}."
        if typ in _HASH_LEN and (len(value) != _HASH_LEN[typ] or not re.fullmatch(r"[0-9a-fA-F]+", value)):
            return "InvalidHashValue", f"Hash value {value} is invalid."
        if typ == "IpAddress":
            try:
                ipaddress.ip_address(value)  # CIDR notation is not supported
            except ValueError:
                return "InvalidIpAddress", f"IP address {value} is invalid."
        if typ == "DomainName" and not _DOMAIN.match(value):
            return "InvalidDomainName", f"Domain name {value} is invalid."
        if typ == "Url" and (
            any(c.isspace() for c in value) or not urlsplit(value if "://" in value else "http://" + value).hostname
        ):
            return "InvalidUrl", f"URL {value} is invalid."
        return None

    def _save(self, ind: dict[str, Any], app: str) -> dict[str, Any]:
        key = (ind["indicatorType"], ind["indicatorValue"].lower())
        old = next(
            (i for i in self.indicators.values() if (i["indicatorType"], i["indicatorValue"].lower()) == key), None
        )
        now = iso(self.epoch)
        entity = old or {
            "id": str(next(self._ids)),
            "creationTimeDateTimeUtc": now,
            "createdBy": app,
            "createdBySource": self.apps[app]["name"],
            "source": self.apps[app]["name"],
            "sourceType": "AadApp",
            "application": ind.get("application"),
        }
        entity.update(
            {
                "indicatorValue": ind["indicatorValue"],
                "indicatorType": ind["indicatorType"],
                "action": ind["action"],
                "title": ind["title"],
                "description": ind["description"],
                "severity": ind.get("severity") or "Informational",
                "expirationTime": ind.get("expirationTime"),
                "recommendedActions": ind.get("recommendedActions"),
                "rbacGroupNames": list(ind.get("rbacGroupNames") or []),
                "rbacGroupIds": [],
                "generateAlert": bool(ind.get("generateAlert", False)),
                "externalID": ind.get("externalID"),
                "lastUpdateTime": now,
                "lastUpdatedBy": app,
            }
        )
        self.indicators[entity["id"]] = entity
        return entity

    def _room(self, ind: dict[str, Any]) -> bool:
        existing = any(
            (i["indicatorType"], i["indicatorValue"].lower()) == (ind["indicatorType"], ind["indicatorValue"].lower())
            for i in self.indicators.values()
        )
        return existing or self.active() < self.max_active

    def _submit(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        reason = self._reason(body)
        if reason is None and not self._room(body):
            reason = ("DisallowedOperation", f"The tenant reached the limit of {self.max_active} active indicators.")
        if reason is not None:
            return self._error(403 if reason[0] == "DisallowedOperation" else 400, *reason)
        return httpx.Response(200, json=self._save(body, app))

    def _import(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        if not isinstance(body, dict) or not isinstance(body.get("Indicators"), list):
            return self._error(400, "InvalidRequestBody", "Request body is incorrect")
        items = body["Indicators"]
        if len(items) > MAX_BATCH:
            return self._error(
                400,
                "MaximumBatchSizeExceeded",
                f"Maximum batch size exceeded. Received: {len(items)}, allowed: {MAX_BATCH}.",
            )
        out = []
        for ind in items:
            reason = self._reason(ind)
            if reason is None and not self._room(ind):
                reason = (
                    "DisallowedOperation",
                    f"The tenant reached the limit of {self.max_active} active indicators.",
                )
            value = ind.get("indicatorValue") if isinstance(ind, dict) else None
            if reason is not None:
                out.append({"id": None, "indicator": value, "isFailed": True, "failureReason": reason[1]})
                continue
            saved = self._save(ind, app)
            out.append({"id": saved["id"], "indicator": value, "isFailed": False, "failureReason": None})
        return httpx.Response(200, json={"value": out})

    def _batch_delete(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        ids = body.get("IndicatorIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return self._error(400, "InvalidRequestBody", "IndicatorIds must be a non-empty list")
        if len(ids) > MAX_BATCH:
            return self._error(
                400,
                "MaximumBatchSizeExceeded",
                f"Maximum batch size exceeded. Received: {len(ids)}, allowed: {MAX_BATCH}.",
            )
        if any(not isinstance(i, str) or not i.isdigit() for i in ids):
            return self._error(400, "InvalidInput", "Invalid input IndicatorIds")
        visible = {i["id"] for i in self._visible(app)}
        if any(i in self.indicators and i not in visible for i in ids):
            return self._error(403, "Forbidden", "The requestor is not exposed to every indicator's device groups")
        missing = [i for i in ids if i not in self.indicators]
        if missing:
            return self._error(404, "ResourceNotFound", f"Indicator {missing[0]} was not found")
        for i in ids:
            del self.indicators[i]
        return httpx.Response(204)

    def _delete_one(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        ident = request.url.path.rsplit("/", 1)[1]
        if ident not in {i["id"] for i in self._visible(app)}:
            return self._error(404, "ResourceNotFound", f"Indicator {ident} was not found")
        del self.indicators[ident]
        return httpx.Response(204)

    # --- alerts -----------------------------------------------------------------------------

    def _list_alerts(self, request: httpx.Request, query: dict[str, str], body: Any, app: str):
        expand = query.get("$expand", "")
        if expand not in ("", "evidence"):
            return self._error(400, "ODataError", f"Invalid OData URI query: $expand={expand} is not supported")
        rows = [a if expand else {**a, "evidence": []} for a in self.alerts]
        return self._page(request, query, rows, ALERT_FILTERS, "Alerts")


def standalone(opts: Any) -> tuple[DefenderEmulator, dict[str, Any]]:
    """A tenant for ``python -m tests.emulators.defender``: demo indicators created in the portal."""
    emu = DefenderEmulator()
    if opts.rate_limit:
        emu.limits = {k: tuple((opts.rate_limit if w == 60 else n, w) for n, w in v) for k, v in LIMITS.items()}
    if opts.page_size:
        emu.page_size = opts.page_size
    emu.add_app("portal-user", "-", {"Ti.ReadWrite.All"}, name="user@corp.example")
    for i in range(opts.seed):
        emu._save(
            {
                "indicatorValue": f"{i + 1:064x}",
                "indicatorType": "FileSha256",
                "action": "Audit",
                "title": f"demo {i}",
                "description": "demo",
                "generateAlert": True,
            },
            "portal-user",
        )
    return emu, {
        "token_url": f"/{emu.tenant}/oauth2/v2.0/token",
        "tenant": emu.tenant,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": SCOPES[0],
    }


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("defender", standalone))
