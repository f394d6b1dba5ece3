"""A CrowdStrike Falcon API emulator (OAuth2 + IOC management) as an httpx.MockTransport handler.

Written from the public API description (FalconPy's endpoint table and PSFalcon's
parameter docs): ``POST /oauth2/token`` (form client_id/client_secret -> 201
``{access_token, token_type, expires_in}``), bearer auth on every other call,
``GET /iocs/combined/indicator/v1`` (FQL ``filter``, ``limit`` 1..2000,
``after`` cursor in ``meta.pagination.after``), ``POST``/``PATCH``/``DELETE
/iocs/entities/indicators/v1``. Errors use the documented envelope
``{"meta": {...}, "errors": [{"code", "message"}], "resources": [...]}``, rate
limits the ``X-RateLimit-Limit``/``-Remaining``/``-RetryAfter`` (epoch) headers.

The FQL parser understands only what ctd sends: ``field:'v'``, ``field:!'v'``,
``field:>='v'`` (also > < <=), ``field:['a','b']``, terms joined with ``+``.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re
from typing import Any
from urllib.parse import parse_qs

import httpx
import trio

CS_TYPES = ("sha256", "md5", "domain", "ipv4", "ipv6")
ACTIONS = ("no_action", "allow", "prevent_no_ui", "detect", "prevent")
HASH_ONLY = ("allow", "prevent", "prevent_no_ui")
SEVERITIES = ("informational", "low", "medium", "high", "critical")
PLATFORMS = ("windows", "mac", "linux", "ios", "android")
MAX_PER_REQUEST = 200
CAP_MESSAGE = "Limit of 1 million indicators reached."
_HEX = re.compile(r"[0-9a-fA-F]+")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}", re.I)
_EXPIRATION = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?Z)?")


def iso(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float:
    import datetime as dt

    t = text[:-1] + "+00:00" if text.endswith("Z") else text
    d = dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


# --- FQL -------------------------------------------------------------------------------


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and brackets."""
    out, cur, quote, depth, i = [], [], False, 0, 0
    while i < len(text):
        c = text[i]
        if quote and c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == "'":
            quote = not quote
        elif not quote and c == "[":
            depth += 1
        elif not quote and c == "]":
            depth -= 1
        if c == sep and not quote and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _literal(text: str) -> str:
    text = text.strip()
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise ValueError(f"expected a quoted string, got {text!r}")
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_fql(text: str) -> list[tuple[str, str, Any]]:
    """``[(field, op, value)]`` with op in = ! >= > <= < in."""
    terms: list[tuple[str, str, Any]] = []
    for term in _split_top(text, "+"):
        field, sep, rest = term.partition(":")
        if not sep or not field:
            raise ValueError(f"bad FQL term {term!r}")
        if rest.startswith("["):
            if not rest.endswith("]"):
                raise ValueError(f"unterminated list in {term!r}")
            inner = rest[1:-1]
            terms.append((field, "in", [_literal(v) for v in _split_top(inner, ",")] if inner else []))
            continue
        for op in ("!", ">=", "<=", ">", "<"):
            if rest.startswith(op):
                terms.append((field, op, _literal(rest[len(op) :])))
                break
        else:
            terms.append((field, "=", _literal(rest)))
    return terms


def _match(ioc: dict[str, Any], field: str, op: str, want: Any) -> bool:
    have = ioc.get(field)
    if op in (">=", ">", "<=", "<"):
        if not isinstance(have, str):
            return False
        a, b = parse_iso(have), parse_iso(want)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    values = have if isinstance(have, list) else [have]
    if op == "in":
        return any(v in want for v in values)
    if op == "=":
        return want in values
    return want not in values  # "!"


# --- the emulator ----------------------------------------------------------------------


class CrowdStrikeEmulator:
    """Stateful fake of the Falcon API; tests read ``iocs`` and ``calls`` back."""

    def __init__(
        self,
        *,
        client_id: str = "cid",
        client_secret: str = "s3cret",
        token_ttl: int = 1799,
        cap: int = 1_000_000,
        rate_limit: int = 6000,
        now: int = 1_767_225_600,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.cap = cap
        self.rate_limit = rate_limit
        self.budget: int | None = None  # API requests left before 429 (None: unlimited)
        self.retry_at_offset = 30  # a 429 says: retry at now + this many seconds
        self.now = now  # the tenant's clock (epoch), for created_on/modified_on
        self.tokens: dict[str, float] = {}  # token -> trio time it expires
        self.token_requests = 0
        self.iocs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.fail_next: list[int] = []  # status codes to answer the next API calls with
        self.reject_all_tokens = False
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)

    # helpers for tests

    def add(self, type_: str, value: str, **fields: Any) -> dict[str, Any]:
        """Seed an IOC as if created in the console (source 'console' unless given)."""
        ioc = self._new(
            type_,
            value,
            {
                "source": "console",
                "action": "detect",
                "severity": "medium",
                "platforms": ["windows"],
                "tags": [],
                **fields,
            },
        )
        ioc.update(fields)  # lets a test set created_on/modified_on/expired directly
        self.iocs[(type_, value)] = ioc
        return ioc

    def values(self) -> set[str]:
        return {v for _, v in self.iocs}

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _new(self, type_: str, value: str, body: dict[str, Any]) -> dict[str, Any]:
        stamp = iso(self.now)
        ioc = {
            "id": f"{next(self._ids):064x}",
            "type": type_,
            "value": value,
            "action": body.get("action"),
            "severity": body.get("severity", ""),
            "platforms": body.get("platforms", []),
            "tags": body.get("tags", []),
            "source": body.get("source", ""),
            "description": body.get("description", ""),
            "applied_globally": body.get("applied_globally", False),
            "host_groups": body.get("host_groups", []),
            "expiration": body.get("expiration"),
            "expired": False,
            "created_on": stamp,
            "modified_on": stamp,
            "created_by": "api-client",
            "modified_by": "api-client",
        }
        return ioc

    # the transport

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def _headers(self) -> dict[str, str]:
        left = self.budget if self.budget is not None else self.rate_limit
        return {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(max(0, left))}

    def _reply(
        self,
        status: int,
        resources: Any = None,
        errors: list[dict[str, Any]] | None = None,
        pagination: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        meta: dict[str, Any] = {"query_time": 0.001, "powered_by": "emulator", "trace_id": "t"}
        if pagination is not None:
            meta["pagination"] = pagination
        body = {"meta": meta, "errors": errors or [], "resources": resources}
        return httpx.Response(status, json=body, headers={**self._headers(), **(headers or {})})

    def _error(self, status: int, message: str, **extra: Any) -> httpx.Response:
        return self._reply(status, errors=[{"code": status, "message": message}], **extra)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        path = request.url.path
        params = {k: v[-1] for k, v in parse_qs(request.url.query.decode(), keep_blank_values=True).items()}
        self.calls.append((request.method, path, params))
        if path == "/oauth2/token" and request.method == "POST":
            return self._token(request)
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if self.reject_all_tokens or token not in self.tokens or trio.current_time() >= self.tokens[token]:
            return self._error(401, "access denied, invalid bearer token")
        if self.budget is not None:
            if self.budget <= 0:
                return self._error(
                    429,
                    "API rate limit exceeded.",
                    headers={"X-RateLimit-RetryAfter": str(self.now + self.retry_at_offset)},
                )
            self.budget -= 1
        if self.fail_next:
            return self._error(self.fail_next.pop(0), "injected failure")
        route = {
            ("GET", "/iocs/combined/indicator/v1"): self._combined,
            ("POST", "/iocs/entities/indicators/v1"): self._create,
            ("PATCH", "/iocs/entities/indicators/v1"): self._update,
            ("DELETE", "/iocs/entities/indicators/v1"): self._delete,
        }.get((request.method, path))
        if route is None:
            return self._error(404, "Not Found")
        return route(request, params)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(request.content.decode()).items()}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return self._error(401, "access denied, invalid client credentials")
        token = f"tok-{next(self._tokens)}"
        self.tokens[token] = trio.current_time() + self.token_ttl
        return httpx.Response(
            201,
            json={"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl},
            headers=self._headers(),
        )

    def _select(self, fql: str | None) -> list[dict[str, Any]]:
        terms = parse_fql(fql) if fql else []
        out = [i for i in self.iocs.values() if all(_match(i, f, op, v) for f, op, v in terms)]
        return sorted(out, key=lambda i: i["id"])

    def _combined(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        try:
            limit = int(params.get("limit", "100"))
            if not 1 <= limit <= 2000:
                raise ValueError("limit must be between 1 and 2000")
            found = self._select(params.get("filter"))
        except ValueError as exc:
            return self._error(400, str(exc))
        after = params.get("after")
        if after:
            try:
                last = json.loads(base64.urlsafe_b64decode(after))["id"]
            except (ValueError, KeyError):
                return self._error(400, "invalid after token")
            found_after = [i for i in found if i["id"] > last]
        else:
            found_after = found
        page = found_after[:limit]
        more = len(found_after) > limit
        token = base64.urlsafe_b64encode(json.dumps({"id": page[-1]["id"]}).encode()).decode() if more else ""
        return self._reply(
            200, resources=[dict(i) for i in page], pagination={"limit": limit, "total": len(found), "after": token}
        )

    def _validate(self, ind: dict[str, Any], creating: bool) -> str | None:
        typ, value, action = ind.get("type"), ind.get("value"), ind.get("action")
        if creating:
            if typ not in CS_TYPES:
                return f"Invalid type: {typ!r}"
            if not isinstance(value, str) or not value:
                return "value is required"
            bad = {
                "sha256": lambda v: len(v) != 64 or not _HEX.fullmatch(v),
                "md5": lambda v: len(v) != 32 or not _HEX.fullmatch(v),
                "domain": lambda v: not _DOMAIN.fullmatch(v),
                "ipv4": lambda v: not _is_ip(v, ipaddress.IPv4Address),
                "ipv6": lambda v: not _is_ip(v, ipaddress.IPv6Address),
            }[typ](value)
            if bad:
                return f"Invalid {typ} value: {value!r}"
        if action is not None and action not in ACTIONS:
            return f"Invalid action: {action!r}"
        if action in HASH_ONLY and typ not in (None, "sha256", "md5"):
            return f"Action {action!r} is only supported for hashes"
        if creating and action in ("detect", "prevent", "prevent_no_ui") and not ind.get("severity"):
            return "severity is required for this action"
        if ind.get("severity") not in (None, *SEVERITIES):
            return f"Invalid severity: {ind.get('severity')!r}"
        plats = ind.get("platforms")
        if (creating or plats is not None) and (not plats or any(p not in PLATFORMS for p in plats)):
            return "platforms must be a non-empty list of windows, mac, linux, ios, android"
        if creating and not ind.get("applied_globally") and not ind.get("host_groups"):
            return "host_groups or applied_globally is required"
        src = ind.get("source")
        if src is not None and not 1 <= len(src) <= 256:
            return "source must be 1 to 256 characters"
        exp = ind.get("expiration")
        if exp is not None and not (isinstance(exp, str) and _EXPIRATION.fullmatch(exp)):
            return f"Invalid expiration: {exp!r}"
        return None

    def _body(self, request: httpx.Request) -> list[Any] | httpx.Response:
        try:
            body = json.loads(request.content)
            inds = body["indicators"]
            assert isinstance(inds, list)
        except (ValueError, KeyError, AssertionError, TypeError):
            return self._error(400, 'body must be {"indicators": [...]}')
        if len(inds) > MAX_PER_REQUEST:
            return self._error(400, f"at most {MAX_PER_REQUEST} indicators per request")
        return inds

    def _create(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        inds = self._body(request)
        if isinstance(inds, httpx.Response):
            return inds
        good, resources = [], []
        for ind in inds:
            reason = self._validate(ind, creating=True)
            key = (ind.get("type"), ind.get("value"))
            if reason is None and key in self.iocs:
                reason = f"Duplicate type: '{key[0]}' and value: '{key[1]}' combination."
            if reason is None:
                good.append(ind)
            else:
                resources.append(
                    {"type": ind.get("type"), "value": ind.get("value"), "message_type": "error", "message": reason}
                )
        if len(self.iocs) + len(good) > self.cap:
            return self._error(400, CAP_MESSAGE)
        for ind in good:
            ioc = self._new(ind["type"], ind["value"], ind)
            self.iocs[(ioc["type"], ioc["value"])] = ioc
            resources.append(dict(ioc))
        if len(good) < len(inds):
            return self._reply(
                400,
                resources=resources,
                errors=[{"code": 400, "message": f"{len(inds) - len(good)} indicator(s) rejected"}],
            )
        return self._reply(201, resources=resources)

    def _update(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        inds = self._body(request)
        if isinstance(inds, httpx.Response):
            return inds
        by_id = {i["id"]: i for i in self.iocs.values()}
        resources, failed = [], 0
        for ind in inds:
            ioc = by_id.get(ind.get("id"))
            reason = "Indicator not found" if ioc is None else None
            if "type" in ind or "value" in ind:
                reason = "type and value cannot be modified"
            if reason is None:
                assert ioc is not None
                reason = self._validate({**ind, "type": ioc["type"]}, creating=False)
            if reason is not None:
                failed += 1
                resources.append({"id": ind.get("id"), "message_type": "error", "message": reason})
                continue
            assert ioc is not None
            for k, v in ind.items():
                if k != "id":
                    ioc[k] = v
            ioc["modified_on"] = iso(self.now)
            resources.append(dict(ioc))
        if failed:
            return self._reply(400, resources=resources, errors=[{"code": 400, "message": f"{failed} failed"}])
        return self._reply(200, resources=resources)

    def _delete(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        try:
            if params.get("filter"):
                doomed = self._select(params["filter"])
            else:
                ids = set(params.get("ids", "").split(","))
                doomed = [i for i in self.iocs.values() if i["id"] in ids]
        except ValueError as exc:
            return self._error(400, str(exc))
        for ioc in doomed:
            del self.iocs[(ioc["type"], ioc["value"])]
        return self._reply(200, resources=[i["id"] for i in doomed])


def _is_ip(v: str, kind: Any) -> bool:
    try:
        kind(v)
    except ValueError:
        return False
    return True


def standalone(opts: Any) -> tuple[CrowdStrikeEmulator, dict[str, Any]]:
    """An emulator for ``python -m tests.emulators.crowdstrike``: demo sha256 IOCs from the console."""
    emu = CrowdStrikeEmulator()
    emu.budget = opts.rate_limit
    for i in range(opts.seed):
        emu.add("sha256", f"{i + 1:064x}")
    return emu, {"token_url": "/oauth2/token", "client_id": emu.client_id, "client_secret": emu.client_secret}


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("crowdstrike", standalone))
