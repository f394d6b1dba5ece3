"""Mimecast API 2.0 as the ``mimecast`` adapter calls it: the account's settings, OAuth2, one POST per call.

Every API 2.0 call is a POST with ``{"meta": ..., "data": [...]}`` and a bearer
token from ``POST /oauth/token`` (client credentials, 30 minutes). The token is
reused until shortly before it expires; a call answered 401 fetches a new one
and is sent once more, a second 401 is an ``AuthError``.

Rate limits: every reply carries ``X-RateLimit-Reset``, the **milliseconds**
until a call is allowed again. A 429 becomes ``SourceUnavailable`` with that
wait in seconds (the shared ``retry_after`` reads vendor headers as seconds or
epoch times, so the value is converted here).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import trio

from ctd.adapters.http import HttpOptions, bearer_token, map_http_errors, raise_for_status
from ctd.adapters.mimecast.mapping import REGIONS
from ctd.model import AuthError, Secret, SourceUnavailable, UpstreamDataError

TOKEN_PATH = "/oauth/token"
RESET_HEADER = "X-RateLimit-Reset"  # milliseconds, per Mimecast's rate-limiting page
TOKEN_MARGIN = 60.0  # renew this long before expiry so a request never carries a dying token
DEFAULT_TTL = 1800.0  # API 2.0 tokens live 30 minutes

URL_LOGS = "/api/ttp/url/get-logs"
ATTACHMENT_LOGS = "/api/ttp/attachment/get-logs"
FEED = "/api/ttp/threat-intel/get-feed"
FEED_TOKEN_HEADER = "x-mc-threat-feed-next-token"
CREATE_URL = "/api/ttp/url/create-managed-url"
LIST_URLS = "/api/ttp/url/get-all-managed-urls"
DELETE_URL = "/api/ttp/url/delete-managed-url"
CREATE_POLICY = "/api/policy/blockedsenders/create-policy"
LIST_POLICIES = "/api/policy/blockedsenders/get-policy"
DELETE_POLICY = "/api/policy/blockedsenders/delete-policy"


class MimecastTenant(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[tenants.NAME]``: one Mimecast account's API 2.0 application, shared by the plugins that name it."""

    client_id: str
    client_secret: Secret
    region: Literal["global", "us", "uk"] = "global"
    url: str | None = None  # overrides region (a regional gateway, a proxy, a test emulator)

    def __post_init__(self) -> None:
        if self.url is not None and (not self.url.startswith(("https://", "http://")) or "?" in self.url):
            raise ValueError("url must be the API's base URL, e.g. https://api.services.mimecast.com")
        if not self.client_id.strip() or not self.client_secret.strip():
            raise ValueError("client_id and client_secret must not be empty")


def base_url(tenant: MimecastTenant) -> str:
    return (tenant.url or REGIONS[tenant.region]).rstrip("/")


def reset_seconds(resp: httpx.Response) -> float | None:
    """``X-RateLimit-Reset`` (milliseconds) as seconds; None when absent or garbled."""
    raw = resp.headers.get(RESET_HEADER)
    try:
        ms = float(raw) if raw is not None else None
    except ValueError:
        return None
    return max(0.0, ms / 1000.0) if ms is not None else None


def decode(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamDataError(f"{what}: reply is not JSON") from exc
    except RecursionError:
        raise UpstreamDataError(f"{what}: reply is nested too deeply to parse") from None


def fail_text(body: Any) -> str:
    """The messages of a reply's ``fail`` list, as one line (for a whole-call failure)."""
    msgs = [
        str(e.get("message") or e.get("code"))
        for f in (body.get("fail") or () if isinstance(body, dict) else ())
        if isinstance(f, dict)
        for e in f.get("errors") or ()
        if isinstance(e, dict)
    ]
    return "; ".join(msgs)


class MimecastApi:
    """One account's API client: the token and the calls that carry it."""

    def __init__(self, client: httpx.AsyncClient, tenant: MimecastTenant) -> None:
        self.client = client
        self.tenant = tenant
        self.base = base_url(tenant)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = trio.Lock()

    async def fetch_token(self, stale: str | None = None) -> str:
        """A new token (unless another task renewed ``stale`` meanwhile)."""
        async with self._lock:
            if self._token is not None and self._token != stale and trio.current_time() < self._expires:
                return self._token
            what = f"Mimecast {TOKEN_PATH}"
            with map_http_errors(what):
                resp = await self.client.post(
                    self.base + TOKEN_PATH,
                    data={
                        "client_id": self.tenant.client_id,
                        "client_secret": self.tenant.client_secret,
                        "grant_type": "client_credentials",
                    },
                )
            if resp.status_code in (400, 401, 403):
                raise AuthError(
                    f"{what}: HTTP {resp.status_code}: client credentials rejected (check client_id/client_secret)"
                )
            self._raise(resp, what)
            body = decode(resp, what)
            self._token, self._expires = bearer_token(body, what, default_ttl=DEFAULT_TTL, margin=TOKEN_MARGIN)
            return self._token

    async def _token_now(self) -> str:
        if self._token is not None and trio.current_time() < self._expires:
            return self._token
        return await self.fetch_token(self._token)

    @staticmethod
    def _raise(resp: httpx.Response, what: str) -> None:
        if resp.status_code == 429:
            raise SourceUnavailable(f"{what}: HTTP 429 rate limited", retry_after=reset_seconds(resp))
        raise_for_status(resp, what)

    async def send(self, path: str, data: list[Any], *, meta: dict[str, Any] | None = None) -> httpx.Response:
        """One API call with the bearer token; a 401 renews the token and resends once."""
        what = f"Mimecast {path}"
        body: dict[str, Any] = {"data": data}
        if meta:
            body["meta"] = meta
        token = await self._token_now()
        for attempt in (1, 2):
            with map_http_errors(what):
                resp = await self.client.post(
                    self.base + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            if resp.status_code != 401:
                break
            if attempt == 2:
                raise AuthError(f"{what}: HTTP 401 even with a new token")
            token = await self.fetch_token(token)
        if resp.status_code == 400:
            detail = fail_text(decode(resp, what)) if resp.content else ""
            raise UpstreamDataError(f"{what}: HTTP 400 {detail}".rstrip())
        self._raise(resp, what)
        return resp

    async def call(self, path: str, data: list[Any], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """A call whose reply is the JSON envelope ``{"meta", "data", "fail"}``."""
        what = f"Mimecast {path}"
        body = decode(await self.send(path, data, meta=meta), what)
        if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
            raise UpstreamDataError(f"{what}: unexpected reply")
        return body

    async def feed(self, query: dict[str, Any]) -> tuple[str, str | None]:
        """One part of the threat-intel feed file (CSV) and the token for the next part."""
        resp = await self.send(FEED, [query])
        token = resp.headers.get(FEED_TOKEN_HEADER)
        return resp.text, token.strip() if token and token.strip() else None
