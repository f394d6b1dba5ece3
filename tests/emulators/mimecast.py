"""A Mimecast API 2.0 emulator (``httpx.MockTransport`` handler), from the public endpoint reference.

See tests/emulators/VENDOR_NOTES.md ("Mimecast") for the sources and the choices
made where the documentation is silent. In short:

* ``POST /oauth/token`` (form ``client_id``, ``client_secret``,
  ``grant_type=client_credentials``) -> ``{access_token, token_type, expires_in: 1800}``;
  every ``/api/...`` call needs ``Authorization: Bearer <token>`` and is a POST
  with a JSON body ``{"meta": {...}, "data": [...]}``.
* Replies are ``{"meta": {"status"}, "data": [...], "fail": [...]}``; a refused
  item is ``{"key": <the item sent>, "errors": [{"code", "message", "retryable"}]}``
  inside an HTTP 200 (function-level failure), the rest of the batch still applies.
* Managed URLs: ``/api/ttp/url/create-managed-url``, ``get-all-managed-urls``,
  ``delete-managed-url``; managed senders: ``/api/managedsender/permit-or-block-sender``;
  blocked sender policies: ``/api/policy/blockedsenders/create-policy``, ``get-policy``,
  ``delete-policy`` (sender an email address or a domain, deleted by id).
* Logs: ``/api/ttp/url/get-logs`` (``clickLogs``), ``/api/ttp/attachment/get-logs``
  (``attachmentLogs``), paged by ``meta.pagination.pageSize``/``pageToken`` with
  ``meta.pagination.next``/``previous``; ``/api/ttp/threat-intel/get-feed``
  answers a ``|``-separated CSV file, continued through ``x-mc-threat-feed-next-token``.
* Every reply carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (milliseconds
  until one more call is allowed); past the quota the reply is 429.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.emulators.common import Tokens, bearer, clock, form, json_body

TOKEN_TTL = 1800  # seconds; API 2.0 access tokens live 30 minutes
DEFAULT_PAGE, MAX_PAGE = 100, 500
_EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_HOST = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
FEED_COLUMNS = ("Timestamp", "SenderAddress", "RecipientAddress", "FileName", "FileType", "MD5", "SHA256")


def stamp(epoch: int) -> str:
    """Mimecast's date format: ``2015-11-16T14:49:18+0000``."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def parse_stamp(text: str) -> int:
    t = text.strip().replace("Z", "+0000")
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d"):
        try:
            d = dt.datetime.strptime(t, fmt)
        except ValueError:
            continue
        return int((d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp())
    raise ValueError(f"bad date {text!r}")


def error(code: str, message: str, retryable: bool = False) -> dict[str, Any]:
    return {"code": code, "message": message, "retryable": retryable}


class MimecastEmulator:
    """One account's state (managed URLs and senders, logs, feed) plus the knobs tests turn."""

    def __init__(
        self,
        *,
        client_id: str = "mc-client",
        client_secret: str = "mc-secret",
        rate_limit: int = 100,
        rate_reset_ms: int = 1000,
        epoch: int | None = None,
    ) -> None:
        self.clients = {client_id: client_secret}
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens = Tokens(TOKEN_TTL, "mc-token")
        self.owner: dict[str, str] = {}  # token -> client id that got it
        self.rate_limit = rate_limit  # the bucket's size (X-RateLimit-Limit)
        self.rate_reset_ms = rate_reset_ms  # one call comes back into the bucket this often
        # The bucket's clock starts at the first call: an emulator built outside a trio
        # run (a fixture) must not compare trio's clock with the monotonic one.
        self._bucket: float = float(rate_limit)
        self._filled: float | None = None
        self.epoch = epoch if epoch is not None else int(time.time())
        self.max_urls: int | None = None  # the account's managed URL limit (not published: a knob)
        self.page_default = DEFAULT_PAGE
        self.managed_urls: dict[str, dict[str, Any]] = {}
        self.senders: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}  # blocked sender policies by id
        self.click_logs: list[dict[str, Any]] = []
        self.attachment_logs: list[dict[str, Any]] = []
        self.feed: dict[str, list[dict[str, str]]] = {"malware_customer": [], "malware_grid": []}
        self.forbidden: set[str] = set()  # paths the app's role may not call (403)
        self.fail_next: list[int] = []  # statuses for the next API calls (500, 503...)
        self.calls: list[tuple[str, Any]] = []  # (path, JSON body) of every API call
        self._ids = itertools.count(1)

    # --- test helpers ---------------------------------------------------------------

    def add_click(self, url: str, *, scan: str = "malicious", at: int | None = None, **fields: Any) -> dict:
        log = {
            "category": "Malicious",
            "userEmailAddress": "user@corp.example",
            "url": url,
            "userAwarenessAction": "n/a",
            "route": "inbound",
            "adminOverride": "N/A",
            "date": stamp(at if at is not None else self.epoch - 60),
            "scanResult": scan,
            "action": "block" if scan == "malicious" else "allow",
            "ttpDefinition": "Default URL Protect",
            "userOverride": "None",
            "emailPartsDescription": ["Body"],
            **fields,
        }
        self.click_logs.append(log)
        return log

    def add_attachment(self, sha256: str, *, result: str = "malicious", at: int | None = None, **fields: Any) -> dict:
        log = {
            "result": result,
            "date": stamp(at if at is not None else self.epoch - 60),
            "senderAddress": "attacker@evil.example",
            "fileName": "invoice.docm",
            "actionTriggered": "message held",
            "route": "inbound",
            "details": "Malicious macro",
            "recipientAddress": "user@corp.example",
            "fileType": "docm",
            "fileHash": sha256,
            "definition": "Default Attachment Protect",
            **fields,
        }
        self.attachment_logs.append(log)
        return log

    def add_feed_row(
        self,
        md5: str,
        sha256: str,
        *,
        feed: str = "malware_customer",
        at: int | None = None,
        sender: str = "attacker@evil.example",
    ) -> None:
        self.feed[feed].append(
            {
                "Timestamp": stamp(at if at is not None else self.epoch - 60),
                "SenderAddress": sender,
                "RecipientAddress": "user@corp.example",
                "FileName": "payload.exe",
                "FileType": "exe",
                "MD5": md5,
                "SHA256": sha256,
            }
        )

    def urls(self) -> set[str]:
        return {u["url"] for u in self.managed_urls.values()}

    def add_managed_url(self, url: str, *, match: str = "explicit", comment: str = "by an admin") -> str:
        """A Managed URL someone else created (in the console); its id."""
        body = {"data": [{"url": url, "action": "block", "matchType": match, "comment": comment}]}
        reply = self._create_urls(body, {}, "console-admin")
        return reply.json()["data"][0]["id"]

    def add_policy(self, sender: str) -> str:
        """A blocked sender policy someone else created (email address or domain); its id."""
        reply = self._create_policies({"data": [_policy_item(sender, "by an admin")]}, {}, "console-admin")
        return reply.json()["data"][0]["id"]

    def blocked_senders(self) -> set[str]:
        """The senders (addresses and domains) of every blocked sender policy."""
        return {_policy_sender(p["policy"]) for p in self.policies.values()}

    # What ``python -m tests.emulators.mimecast --control`` lets a test call over HTTP.
    CONTROL = (
        "add_click",
        "add_attachment",
        "add_feed_row",
        "add_managed_url",
        "add_policy",
        "urls",
        "blocked_senders",
    )

    def api_calls(self, path: str) -> list[Any]:
        return [body for p, body in self.calls if p == path]

    # --- transport ------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.handle(request)

    def _take(self) -> tuple[bool, dict[str, str]]:
        """Spend one call from the bucket; (allowed, rate headers)."""
        now, per = clock(), self.rate_reset_ms / 1000
        if self._filled is None:
            self._filled = now
        back = int((now - self._filled) / per) if per > 0 else self.rate_limit
        if back:
            self._bucket = min(float(self.rate_limit), self._bucket + back)
            self._filled = now if self._bucket >= self.rate_limit else self._filled + back * per
        allowed = self._bucket >= 1
        if allowed:
            self._bucket -= 1
        reset = 0 if self._bucket >= self.rate_limit else max(1, int((self._filled + per - now) * 1000))
        return allowed, {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(int(self._bucket)),
            "X-RateLimit-Reset": str(reset),
        }

    def _reply(
        self,
        status: int,
        data: list[Any],
        fail: list[Any],
        headers: dict[str, str],
        pagination: dict[str, Any] | None = None,
    ) -> httpx.Response:
        meta: dict[str, Any] = {"status": status}
        if pagination is not None:
            meta["pagination"] = pagination
        return httpx.Response(status, json={"meta": meta, "data": data, "fail": fail}, headers=headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str], retryable: bool = False):
        return self._reply(status, [], [{"errors": [error(code, message, retryable)]}], headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/oauth/token":
            return self._token(request)
        token = bearer(request)
        if not self.tokens.valid(token):
            return self._error(401, "err_auth_token_invalid", "The access token is invalid or has expired", {})
        allowed, headers = self._take()  # the quota is the application's: counted once it is known
        if not allowed:
            return self._error(429, "err_rate_limit_exceeded", "Too many requests", headers, retryable=True)
        if request.method != "POST":
            return self._error(405, "err_method_not_allowed", "Only POST is supported", headers)
        route = _ROUTES.get(path)
        if route is None:
            return self._error(404, "err_not_found", f"No such endpoint {path}", headers)
        if path in self.forbidden:
            return self._error(403, "err_forbidden", "The application role lacks this permission", headers)
        try:
            body = json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
                raise ValueError("body must be an object with a data array")
        except ValueError as exc:
            return self._error(400, "err_request_malformed", f"Malformed request: {exc}", headers)
        self.calls.append((path, body))
        if self.fail_next:
            status = self.fail_next.pop(0)
            return self._error(status, "err_server", "Injected failure", headers, retryable=status >= 500)
        return route(self, body, headers, self.owner.get(token or "", ""))

    def _token(self, request: httpx.Request) -> httpx.Response:
        f = form(request)
        if f.get("grant_type") != "client_credentials":
            return httpx.Response(
                400,
                json={"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"},
            )
        cid = f.get("client_id", "")
        if cid not in self.clients or self.clients[cid] != f.get("client_secret"):
            return httpx.Response(
                401, json={"error": "invalid_client", "error_description": "Client authentication failed"}
            )
        token = self.tokens.issue()
        self.owner[token] = cid
        return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL})

    # --- managed URLs -----------------------------------------------------------------------

    def _url_reason(self, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict):
            return "err_validation_invalid", "Each data item must be an object"
        for key in ("url", "action"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                return "err_validation_blank", f"Field is required: {key}"
        if item["action"] not in ("block", "permit"):
            return "err_validation_invalid", "action must be block or permit"
        if item.get("matchType", "explicit") not in ("explicit", "domain"):
            return "err_validation_invalid", "matchType must be explicit or domain"
        url = item["url"]
        if "#" in url:
            return "err_validation_invalid", "The URL must not include a fragment (#)"
        if any(c.isspace() for c in url):
            return "err_validation_invalid", "The URL must not contain whitespace"
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _HOST.match(parts.hostname):
            return "err_validation_invalid", "Invalid URL"
        return None

    def _create_urls(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        data, fail = [], []
        for item in body.get("data", []):
            reason = self._url_reason(item)
            if reason is None:
                match = item.get("matchType", "explicit")
                if any(u["url"] == item["url"] and u["matchType"] == match for u in self.managed_urls.values()):
                    reason = ("err_managed_url_exists", "This URL is already managed")
                elif self.max_urls is not None and len(self.managed_urls) >= self.max_urls:
                    reason = ("err_managed_url_limit", f"The account limit of {self.max_urls} managed URLs is reached")
            if reason is not None:
                fail.append({"key": item, "errors": [error(*reason)]})
                continue
            raw = item["url"]
            parts = urlsplit(raw if "://" in raw else "http://" + raw)
            entry = {
                "id": f"mURL{next(self._ids):08d}",
                "url": raw,
                "scheme": parts.scheme if "://" in raw else "",
                "domain": parts.hostname,
                "port": parts.port or -1,
                "path": parts.path,
                "queryString": parts.query,
                "matchType": item.get("matchType", "explicit"),
                "action": item["action"],
                "comment": item.get("comment", ""),
                "disableUserAwareness": bool(item.get("disableUserAwareness", False)),
                "disableRewrite": bool(item.get("disableRewrite", False)),
                "disableLogClick": bool(item.get("disableLogClick", False)),
                "_owner": owner,
            }
            self.managed_urls[entry["id"]] = entry
            data.append(_public(entry, drop=("url",)))
        return self._reply(200, data, fail, headers)

    def _list_urls(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        query = (body.get("data") or [{}])[0] if body.get("data") else {}
        want, exact = str(query.get("domainOrUrl") or ""), bool(query.get("exactMatch", False))
        out = [
            _public(u, drop=("url",))
            for u in self.managed_urls.values()
            if not want or (want in (u["url"], u["domain"]) if exact else want in u["url"])
        ]
        return self._reply(200, out, [], headers)

    def _delete_urls(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        fail = []
        for item in body.get("data", []):
            ident = item.get("id") if isinstance(item, dict) else None
            if not isinstance(ident, str) or ident not in self.managed_urls:
                fail.append({"key": item, "errors": [error("err_managed_url_not_found", "Managed URL not found")]})
                continue
            del self.managed_urls[ident]
        return self._reply(200, [], fail, headers)

    # --- managed senders --------------------------------------------------------------------

    def _sender(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        data, fail = [], []
        for item in body.get("data", []):
            reason = None
            if not isinstance(item, dict):
                reason = ("err_validation_invalid", "Each data item must be an object")
            else:
                for key in ("sender", "to", "action"):
                    if not isinstance(item.get(key), str) or not item[key].strip():
                        reason = reason or ("err_validation_blank", f"Field is required: {key}")
                if reason is None and item["action"] not in ("permit", "block"):
                    reason = ("err_validation_invalid", "action must be permit or block")
                if reason is None and not _EMAIL.match(item["sender"]):
                    reason = ("err_validation_invalid", "sender must be an email address")
                if reason is None and not _EMAIL.match(item["to"]):
                    reason = ("err_validation_invalid", "to must be an email address")
            if reason is not None:
                fail.append({"key": item, "errors": [error(*reason)]})
                continue
            pair = (item["sender"].lower(), item["to"].lower())
            old = next((s for s in self.senders.values() if (s["sender"], s["to"]) == pair), None)
            entry = {
                "id": old["id"] if old else f"mSND{next(self._ids):08d}",
                "sender": key[0],
                "to": key[1],
                "type": item["action"].capitalize(),
                "_owner": owner,
            }
            self.senders[entry["id"]] = entry
            data.append(_public(entry))
        return self._reply(200, data, fail, headers)

    # --- blocked sender policies -----------------------------------------------------------

    def _policy_reason(self, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict) or not isinstance(item.get("policy"), dict):
            return "err_validation_invalid", "Each data item needs an option and a policy object"
        if item.get("option") not in ("no_action", "block_sender"):
            return "err_validation_invalid", "option must be one of: no_action, block_sender"
        policy = item["policy"]
        if not isinstance(policy.get("description"), str) or not policy["description"].strip():
            return "err_validation_blank", "Field is required: policy.description"
        if policy.get("fromPart", "envelope_from") not in ("envelope_from", "header_from", "both"):
            return "err_validation_invalid", "fromPart must be one of: envelope_from, header_from, both"
        src = policy.get("from")
        kind = src.get("type") if isinstance(src, dict) else None
        if kind == "email_domain":
            if not isinstance(src.get("emailDomain"), str) or not _HOST.match(src["emailDomain"]):
                return "err_validation_invalid", "from.emailDomain must be a domain"
        elif kind == "individual_email_address":
            if not isinstance(src.get("emailAddress"), str) or not _EMAIL.match(src["emailAddress"]):
                return "err_validation_invalid", "from.emailAddress must be an email address"
        elif kind not in ("everyone", "internal_addresses", "external_addresses"):
            return "err_validation_invalid", "from.type is not supported"
        for key in ("fromDate", "toDate"):
            if policy.get(key) is not None:
                try:
                    parse_stamp(str(policy[key]))
                except ValueError:
                    return "err_validation_invalid", f"{key} is not a date"
        return None

    def _create_policies(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        data, fail = [], []
        for item in body.get("data", []):
            reason = self._policy_reason(item)
            if reason is not None:
                fail.append({"key": item, "errors": [error(*reason)]})
                continue
            policy = dict(item["policy"])
            policy.setdefault("fromPart", "envelope_from")
            policy.setdefault("to", {"type": "everyone"})
            policy["fromType"] = policy["from"]["type"]
            policy["toType"] = policy["to"].get("type", "everyone")
            policy.update({"enabled": True, "createTime": stamp(self.epoch), "lastUpdated": stamp(self.epoch)})
            entry = {"option": item["option"], "id": f"mBSP{next(self._ids):08d}", "policy": policy, "_owner": owner}
            self.policies[entry["id"]] = entry
            data.append(_public(entry))
        return self._reply(200, data, fail, headers)

    def _get_policies(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        wanted = {i.get("id") for i in body.get("data", []) if isinstance(i, dict) and i.get("id")}
        out = [_public(p) for p in self.policies.values() if not wanted or p["id"] in wanted]
        return self._reply(200, out, [], headers)

    def _delete_policies(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        data, fail = [], []
        for item in body.get("data", []):
            ident = item.get("id") if isinstance(item, dict) else None
            if not isinstance(ident, str) or ident not in self.policies:
                fail.append({"key": item, "errors": [error("err_policy_not_found", "Policy not found")]})
                continue
            del self.policies[ident]
            data.append({"id": ident})
        return self._reply(200, data, fail, headers)

    # --- logs and feed ----------------------------------------------------------------------

    def _page(self, rows: list[dict], body: dict, headers: dict[str, str], field: str) -> httpx.Response:
        query = (body.get("data") or [{}])[0]
        pag = (body.get("meta") or {}).get("pagination") or {}
        size = min(max(int(pag.get("pageSize") or self.page_default), 1), MAX_PAGE)
        try:
            lo = parse_stamp(query["from"]) if query.get("from") else self.epoch - self.epoch % 86400
            hi = parse_stamp(query["to"]) if query.get("to") else self.epoch
            offset = int(base64.urlsafe_b64decode(pag["pageToken"]).decode()) if pag.get("pageToken") else 0
        except (ValueError, TypeError):
            return self._error(400, "err_validation_invalid", "Invalid from, to or pageToken", headers)
        route = query.get("route", "all")
        verdict_key = "scanResult" if field == "clickLogs" else "result"
        verdict = query.get(verdict_key, "all")
        picked = [
            r
            for r in rows
            if lo <= parse_stamp(r["date"]) <= hi
            and route in ("all", r["route"])
            and verdict in ("all", r[verdict_key])
        ]
        picked.sort(key=lambda r: parse_stamp(r["date"]), reverse=not query.get("oldestFirst", False))
        page = picked[offset : offset + size]
        pagination: dict[str, Any] = {"pageSize": size}
        if offset + size < len(picked):
            pagination["next"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        if offset > 0:
            pagination["previous"] = base64.urlsafe_b64encode(str(max(0, offset - size)).encode()).decode()
        return self._reply(200, [{field: page}], [], headers, pagination)

    def _click_logs(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        return self._page(self.click_logs, body, headers, "clickLogs")

    def _attachment_logs(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        return self._page(self.attachment_logs, body, headers, "attachmentLogs")

    def _feed(self, body: dict, headers: dict[str, str], owner: str) -> httpx.Response:
        query = (body.get("data") or [{}])[0]
        kind = query.get("feedType", "malware_customer")
        if kind not in self.feed or query.get("fileType", "csv") != "csv":
            return self._error(400, "err_validation_invalid", "feedType or fileType not supported", headers)
        try:
            lo = parse_stamp(query["start"]) if query.get("start") else self.epoch - 7 * 86400
            hi = parse_stamp(query["end"]) if query.get("end") else self.epoch
            offset = int(base64.urlsafe_b64decode(query["token"]).decode()) if query.get("token") else 0
        except (ValueError, TypeError):
            return self._error(400, "err_validation_invalid", "Invalid start, end or token", headers)
        rows = [r for r in self.feed[kind] if lo <= parse_stamp(r["Timestamp"]) <= hi]
        page = rows[offset : offset + self.page_default]
        text = "\n".join(["|".join(FEED_COLUMNS), *("|".join(r[c] for c in FEED_COLUMNS) for r in page)]) + "\n"
        if offset + len(page) < len(rows):
            headers = {
                **headers,
                "x-mc-threat-feed-next-token": base64.urlsafe_b64encode(str(offset + len(page)).encode()).decode(),
            }
        return httpx.Response(200, text=text, headers={**headers, "content-type": "text/csv"})


def _public(entry: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_") and k not in drop}


def _policy_item(sender: str, description: str) -> dict[str, Any]:
    src = (
        {"type": "individual_email_address", "emailAddress": sender}
        if "@" in sender
        else {"type": "email_domain", "emailDomain": sender}
    )
    return {"option": "block_sender", "policy": {"description": description, "from": src, "to": {"type": "everyone"}}}


def _policy_sender(policy: dict[str, Any]) -> str:
    src = policy.get("from") or {}
    return str(src.get("emailAddress") or src.get("emailDomain") or src.get("type"))


_ROUTES = {
    "/api/ttp/url/create-managed-url": MimecastEmulator._create_urls,
    "/api/ttp/url/get-all-managed-urls": MimecastEmulator._list_urls,
    "/api/ttp/url/delete-managed-url": MimecastEmulator._delete_urls,
    "/api/managedsender/permit-or-block-sender": MimecastEmulator._sender,
    "/api/ttp/url/get-logs": MimecastEmulator._click_logs,
    "/api/ttp/attachment/get-logs": MimecastEmulator._attachment_logs,
    "/api/ttp/threat-intel/get-feed": MimecastEmulator._feed,
    "/api/policy/blockedsenders/create-policy": MimecastEmulator._create_policies,
    "/api/policy/blockedsenders/get-policy": MimecastEmulator._get_policies,
    "/api/policy/blockedsenders/delete-policy": MimecastEmulator._delete_policies,
}


def standalone(opts: Any) -> tuple[MimecastEmulator, dict[str, Any]]:
    """An account for ``python -m tests.emulators.mimecast``: demo malicious clicks and attachments."""
    emu = MimecastEmulator(rate_limit=opts.rate_limit or 100, rate_reset_ms=60_000 if opts.rate_limit else 1000)
    if opts.page_size:
        emu.page_default = opts.page_size
    for i in range(opts.seed):
        emu.add_click(f"https://evil{i}.example/login", at=emu.epoch - 600 + i)
        emu.add_attachment(f"{i + 1:064x}", at=emu.epoch - 600 + i)
        emu.add_feed_row(f"{i + 1:032x}", f"{i + 1:064x}", at=emu.epoch - 600 + i)
    return emu, {"token_url": "/oauth/token", "client_id": emu.client_id, "client_secret": emu.client_secret}


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("mimecast", standalone))
