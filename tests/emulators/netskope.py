"""A Netskope tenant emulator (``httpx.MockTransport`` handler), written from the documented API.

Endpoints (REST API v2 unless noted), as the public docs and the reference
system describe them:

* ``GET /api/v2/events/dataexport/alerts/{type}?index=&operation=`` - the
  data-export iterator: ``operation`` is an epoch (seek; served in one-hour
  windows), ``next``, ``head``, ``tail`` or ``resend`` (the last page again).
  Replies ``{ok, result, wait_time, timestamp_hwm}``, gzip when asked.
* ``GET /api/v2/policy/urllist?field=id,name[,data]``, ``POST /api/v2/policy/urllist``
  (create), ``PATCH /api/v2/policy/urllist/{id}/append|replace``,
  ``POST /api/v2/policy/urllist/deploy``. Invalid values (whitespace, IPv6,
  empty) make the whole update fail with 400 and ``message: [[value, reason], ...]``.
* ``POST /api/v1/updateFileHashList`` (v1 token in the body or query): replaces
  an existing list; identical content answers ``Duplicate request, no change
  in file hashes``.

v2 calls need the ``Netskope-Api-Token`` header (401 without a valid one, 403
for endpoints listed in ``forbidden``). Every reply carries ``ratelimit-limit``,
``ratelimit-remaining`` and ``ratelimit-reset``; when the budget is spent the
tenant answers 429. State is kept so tests can read back what was pushed.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import re
import time
from collections.abc import Callable
from collections.abc import Iterator as _Iter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

MAX_ENTRIES = 300_000
MAX_URL_LIST_BYTES = 7 * 1024 * 1024
MAX_HASH_LIST_BYTES = 8 * 1024 * 1024
WINDOW = 3600  # an epoch seek serves one hour at a time

_HASH = re.compile(r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{64})$")


@dataclass
class UrlList:
    id: int
    name: str
    type: str
    urls: list[str]
    applied: list[str] = field(default_factory=list)
    pending: bool = True


@dataclass
class Iterator:
    t: int  # start of the current window
    skip: int = 0  # alerts of the window already served
    last: list[dict] = field(default_factory=list)  # the last page (for resend)
    last_hwm: int = 0


def entry_size(value: str) -> int:
    """Size a list entry counts for: its JSON-escaped length (with quotes) plus 3 bytes."""
    return len(json.dumps(value)) + 3


def invalid_reason(value: Any) -> str | None:
    """Why the tenant refuses a URL list value (None if it takes it)."""
    if not isinstance(value, str) or not value.strip():
        return "Empty value"
    if any(c.isspace() for c in value):
        return "Invalid URL: contains whitespace"
    host = value.split("://", 1)[-1].split("/", 1)[0]
    if host.startswith("["):
        return "IPv6 addresses are not supported"
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return None
    return "IPv6 addresses are not supported"


class NetskopeTenant:
    """One tenant's state plus the knobs tests turn (tokens, page size, rate budget, failures)."""

    def __init__(
        self,
        *,
        v2_token: str = "v2-secret",
        v1_token: str | None = "v1-secret",
        page_size: int = 2,
        now: int | None = None,
        rate_limit: int = 100,
        rate_budget: int | None = None,
        rate_reset: int = 7,
    ) -> None:
        self.v2_token = v2_token
        self.v1_token = v1_token
        self.page_size = page_size
        self._now = now
        self.alerts: dict[str, list[dict]] = {"malware": [], "malsite": []}
        self.iterators: dict[tuple[str, str], Iterator] = {}
        self.url_lists: dict[int, UrlList] = {}
        self.hash_lists: dict[str, list[str]] = {}
        self.max_entries = MAX_ENTRIES  # the documented limits (tests may lower them)
        self.max_url_list_bytes = MAX_URL_LIST_BYTES
        self.max_hash_list_bytes = MAX_HASH_LIST_BYTES
        self.rate_limit = rate_limit
        self.rate_budget = rate_budget  # requests left before 429 (None: unlimited)
        self.rate_reset = rate_reset
        self.forbidden: set[str] = set()  # path prefixes the v2 token has no permission for
        self.fail_next: list[int] = []  # status codes for the next requests (e.g. 503)
        self.fail_deploy: list[int] = []  # status codes for the next deploys only (nothing is deployed)
        # Fault hooks: ``before(request)`` runs before a request is handled (a status it returns is
        # the answer and nothing changes); ``after(request, status)`` once it was handled, before
        # the reply leaves. Fault tests kill the daemon in them at an exact point of a delivery.
        self.before: Callable[[httpx.Request], int | None] | None = None
        self.after: Callable[[httpx.Request, int], None] | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.deploys = 0
        self.appended: list[str] = []  # every value an append accepted, repeats included (duplicate checks)
        self._ids = 1000

    # --- test helpers ---------------------------------------------------------

    @property
    def now(self) -> int:
        return self._now if self._now is not None else int(time.time())

    def add_alert(self, kind: str, **fields: Any) -> dict:
        alert = {"alert_type": "Malware" if kind == "malware" else "malsite", **fields}
        alert.setdefault("timestamp", self.now - 60)
        self.alerts[kind].append(alert)
        self.alerts[kind].sort(key=lambda a: a["timestamp"])
        return alert

    def url_list(self, name: str) -> UrlList | None:
        return next((lst for lst in self.url_lists.values() if lst.name == name), None)

    def list_values(self, name: str) -> list[str] | None:
        """What the URL list ``name`` holds as deployed (None: no such list)."""
        lst = self.url_list(name)
        return None if lst is None else list(lst.applied)

    def add_hash_list(self, name: str) -> None:
        """A file hash list made in the tenant (the v1 API only replaces existing ones)."""
        self.hash_lists.setdefault(name, [])

    def hash_values(self, name: str) -> list[str] | None:
        return self.hash_lists.get(name)

    # What ``python -m tests.emulators.netskope --control`` lets a test call over HTTP.
    CONTROL = ("add_alert", "list_values", "add_hash_list", "hash_values")

    def calls(self, method: str | None = None, prefix: str = "") -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if (method is None or r[0] == method) and r[1].startswith(prefix)]

    def operations(self, kind: str) -> list[str]:
        """The iterator operations asked for ``kind``, in order."""
        return [q.get("operation", "") for _, path, q in self.calls("GET", f"/api/v2/events/dataexport/alerts/{kind}")]

    # --- the transport ---------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (synchronous, so a socket server can call it too)."""
        if self.before is not None and (status := self.before(request)) is not None:
            self.requests.append((request.method, request.url.path, {}))
            return self._reply(status, {"status": "error", "message": "Service unavailable"}, request)
        resp = self._handle(request)
        if self.after is not None:
            self.after(request, resp.status_code)
        return resp

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        query = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        self.requests.append((request.method, path, query))
        if self.rate_budget is not None:
            if self.rate_budget <= 0:
                return self._reply(429, {"status": "error", "message": "Too many requests"}, request)
            self.rate_budget -= 1
        if self.fail_next:
            return self._reply(self.fail_next.pop(0), {"status": "error", "message": "Service unavailable"}, request)
        if path == "/api/v2/policy/urllist/deploy" and self.fail_deploy:
            return self._reply(self.fail_deploy.pop(0), {"status": "error", "message": "Deploy failed"}, request)
        if path == "/api/v1/updateFileHashList":
            return self._reply(*self._v1_hash_list(request, query), request)
        token = request.headers.get("netskope-api-token")
        if token != self.v2_token:
            return self._reply(401, {"status": "error", "message": "Unauthorized: invalid or missing token"}, request)
        if any(path.startswith(p) for p in self.forbidden):
            return self._reply(403, {"status": "error", "message": "Forbidden: token has no access"}, request)
        m = re.fullmatch(r"/api/v2/events/dataexport/alerts/(\w+)", path)
        if m and request.method == "GET":
            return self._reply(*self._dataexport(m.group(1), query), request)
        if path == "/api/v2/policy/urllist" and request.method == "GET":
            return self._reply(200, self._list_lists(query), request)
        if path == "/api/v2/policy/urllist" and request.method == "POST":
            return self._reply(*self._create(json.loads(request.content)), request)
        if path == "/api/v2/policy/urllist/deploy" and request.method == "POST":
            return self._reply(*self._deploy(), request)
        m = re.fullmatch(r"/api/v2/policy/urllist/(\d+)/(append|replace)", path)
        if m and request.method == "PATCH":
            return self._reply(*self._update(int(m.group(1)), m.group(2), json.loads(request.content)), request)
        return self._reply(404, {"status": "error", "message": "Not found"}, request)

    def _reply(self, status: int, body: Any, request: httpx.Request) -> httpx.Response:
        headers = {
            "content-type": "application/json",
            "ratelimit-limit": str(self.rate_limit),
            "ratelimit-remaining": str(self.rate_budget if self.rate_budget is not None else self.rate_limit),
            "ratelimit-reset": str(self.rate_reset),
        }
        content = json.dumps(body).encode()
        if "gzip" in request.headers.get("accept-encoding", ""):
            content = gzip.compress(content)
            headers["content-encoding"] = "gzip"
        return httpx.Response(status, headers=headers, content=content)

    # --- data export ------------------------------------------------------------

    def _dataexport(self, kind: str, q: dict[str, str]) -> tuple[int, Any]:
        if kind not in self.alerts:
            return 400, {"ok": 0, "message": f"unsupported alert type {kind}"}
        index, op = q.get("index", ""), q.get("operation", "")
        if not index or not op:
            return 400, {"ok": 0, "message": "index and operation are required"}
        key = (kind, index)
        it = self.iterators.get(key)
        if op.isdigit():
            it = self.iterators[key] = Iterator(t=int(op))
        elif op == "head":
            first = self.alerts[kind][0]["timestamp"] if self.alerts[kind] else self.now
            it = self.iterators[key] = Iterator(t=first)
        elif op == "tail":
            it = self.iterators[key] = Iterator(t=self.now)
            page = self.alerts[kind][-self.page_size :]
            it.last, it.last_hwm = page, self.now
            return 200, {"ok": 1, "result": page, "wait_time": 0, "timestamp_hwm": self.now}
        elif op == "resend":
            if it is None:
                return 400, {"ok": 0, "message": f"iterator {index} does not exist"}
            return 200, {"ok": 1, "result": it.last, "wait_time": 0, "timestamp_hwm": it.last_hwm}
        elif op == "next":
            if it is None:
                it = self.iterators[key] = Iterator(t=self.now)
        else:
            return 400, {"ok": 0, "message": f"invalid operation {op}"}
        return 200, self._page(kind, it)

    def _page(self, kind: str, it: Iterator) -> dict:
        now = self.now
        if it.t >= now:
            it.last, it.last_hwm = [], now
            return {"ok": 1, "result": [], "wait_time": 30, "timestamp_hwm": now}
        end = min(it.t + WINDOW, now)
        window = [a for a in self.alerts[kind] if it.t <= a["timestamp"] < end]
        page = window[it.skip : it.skip + self.page_size]
        if it.skip + len(page) >= len(window):
            hwm = end
            it.t, it.skip = end, 0
        else:
            hwm = page[-1]["timestamp"]
            it.skip += len(page)
        it.last, it.last_hwm = page, hwm
        return {"ok": 1, "result": page, "wait_time": 0, "timestamp_hwm": hwm}

    # --- URL lists ---------------------------------------------------------------

    def _list_lists(self, q: dict[str, str]) -> list[dict]:
        fields = set((q.get("field") or "id,name,data").split(","))
        out = []
        for lst in self.url_lists.values():
            entry: dict[str, Any] = {"id": lst.id, "name": lst.name}
            if "data" in fields:
                entry["data"] = {"urls": list(lst.urls), "type": lst.type}
            entry["pending"] = int(lst.pending)
            out.append(entry)
        return out

    def _check(self, urls: Any, list_type: Any) -> tuple[int, Any] | None:
        if list_type not in ("exact", "regex"):
            return 400, {"status": "error", "message": "data.type must be exact or regex"}
        if not isinstance(urls, list) or not urls:
            return 400, {"status": "error", "message": "data.urls must be a non-empty list"}
        bad = [[u, r] for u in urls if (r := invalid_reason(u))]
        if bad:
            return 400, {"status": "error", "message": bad}
        return None

    def _too_big(self, urls: list[str]) -> tuple[int, Any] | None:
        if len(urls) > self.max_entries or sum(entry_size(u) for u in urls) > self.max_url_list_bytes:
            return 400, {"status": "error", "message": "URL list exceeds the limit of 300000 entries or 7 MB"}
        return None

    def _create(self, body: Any) -> tuple[int, Any]:
        name = body.get("name") if isinstance(body, dict) else None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name or not isinstance(data, dict):
            return 400, {"status": "error", "message": "name and data are required"}
        if self.url_list(name) is not None:
            return 409, {"status": "error", "message": f"URL list {name} already exists"}
        if err := self._check(data.get("urls"), data.get("type")):
            return err
        if err := self._too_big(data["urls"]):
            return err
        self._ids += 1
        lst = self.url_lists[self._ids] = UrlList(self._ids, name, data["type"], list(dict.fromkeys(data["urls"])))
        return 200, {"id": lst.id, "name": lst.name, "data": {"urls": lst.urls, "type": lst.type}, "pending": 1}

    def _update(self, ident: int, how: str, body: Any) -> tuple[int, Any]:
        lst = self.url_lists.get(ident)
        if lst is None:
            return 404, {"status": "error", "message": f"URL list {ident} not found"}
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return 400, {"status": "error", "message": "data is required"}
        if err := self._check(data.get("urls"), data.get("type")):
            return err
        urls = data["urls"]
        new = list(dict.fromkeys(lst.urls + urls if how == "append" else urls))
        if err := self._too_big(new):
            return err
        lst.urls, lst.type, lst.pending = new, data["type"], True
        if how == "append":
            self.appended.extend(urls)
        return 200, {"id": lst.id, "name": lst.name, "data": {"urls": lst.urls, "type": lst.type}, "pending": 1}

    def _deploy(self) -> tuple[int, Any]:
        self.deploys += 1
        deployed = []
        for lst in self.url_lists.values():
            if lst.pending:
                lst.applied, lst.pending = list(lst.urls), False
                deployed.append({"id": lst.id, "name": lst.name})
        return 200, deployed

    # --- v1 file hash list ------------------------------------------------------------

    def _v1_hash_list(self, request: httpx.Request, q: dict[str, str]) -> tuple[int, Any]:
        if request.method != "POST":
            return 405, {"status": "error", "errors": ["Method not allowed"]}
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return 400, {"status": "error", "errors": ["Invalid JSON"]}
        token = body.get("token") or q.get("token")
        if self.v1_token is None or token != self.v1_token:
            return 403, {"status": "error", "errorCode": "Authorization Error", "errors": ["Invalid token"]}
        name, raw = body.get("name"), body.get("list")
        if name not in self.hash_lists:
            return 200, {"status": "error", "errorCode": "General Error", "errors": [f"File list {name} not found"]}
        if not isinstance(raw, str) or not raw:
            return 200, {"status": "error", "errorCode": "General Error", "errors": ["list is required"]}
        values = raw.split(",")
        bad = [v for v in values if not _HASH.match(v)]
        if bad:
            return 200, {"status": "error", "errorCode": "General Error", "errors": [f"Invalid hash {bad[0]}"]}
        if len(values) > self.max_entries or sum(entry_size(v) for v in values) > self.max_hash_list_bytes:
            return 200, {"status": "error", "errorCode": "General Error", "errors": ["File hash list exceeds 8 MB"]}
        if values == self.hash_lists[name]:
            return 200, {
                "status": "error",
                "errorCode": "General Error",
                "errors": ["Duplicate request, no change in file hashes"],
            }
        self.hash_lists[name] = values
        return 200, {"status": "success"}


# --- the same handler over a real socket (127.0.0.1), for end-to-end tests ----------------


@contextlib.contextmanager
def serve_on_localhost(tenant: NetskopeTenant) -> _Iter[str]:
    """Serve ``tenant`` over HTTP on 127.0.0.1; yields the base URL."""
    from tests.emulators import serve

    with serve.serve_on_localhost(tenant) as base:
        yield base


def standalone(opts: Any) -> tuple[NetskopeTenant, dict[str, Any]]:
    """A tenant for ``python -m tests.emulators.netskope``: demo malware alerts of the last hour."""
    tenant = NetskopeTenant(page_size=opts.page_size or 2, rate_budget=opts.rate_limit)
    for i in range(opts.seed):
        tenant.add_alert("malware", timestamp=tenant.now - 1800 + i, md5=f"{i:032x}", local_sha256=f"{i:064x}")
    return tenant, {"header": "Netskope-Api-Token", "v2_token": tenant.v2_token, "v1_token": tenant.v1_token}


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("netskope", standalone))
