"""Microsoft Defender for Endpoint's API as the ``defender`` adapter calls it: the tenant, the app token, the calls.

The token comes from the Microsoft identity platform
(``POST {login}/{tenant_id}/oauth2/v2.0/token``, client credentials, scope
``https://api.securitycenter.microsoft.com/.default``) and lasts an hour; it is
reused until shortly before it expires. A call answered 401 fetches a new token
and is sent once more; a second 401 is an ``AuthError``.

Lists page with ``@odata.nextLink``, an absolute URL the server writes: it is
followed only on the API's own origin, so a hostile reply cannot send the
bearer token elsewhere. Throttling answers 429 with ``Retry-After`` seconds,
which becomes the ``retry_after`` of the ``SourceUnavailable`` raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from ctd.adapters.defender.mapping import API, LOGIN, SCOPE, error_reason, next_link
from ctd.adapters.http import HttpOptions, bearer_token, map_http_errors, origin_of, origin_text, raise_for_status
from ctd.model import AuthError, Secret, UpstreamDataError

INDICATORS = "/api/indicators"
IMPORT = "/api/indicators/import"
BATCH_DELETE = "/api/indicators/BatchDelete"
ALERTS = "/api/alerts"
TOKEN_MARGIN = 120.0  # renew this long before expiry so a request never carries a dying token
MAX_PAGES = 1000  # a list that never ends is a broken or hostile server


class DefenderTenant(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[tenants.NAME]``: one Entra ID app registration for a Defender for Endpoint tenant."""

    tenant_id: str  # the Entra ID (Azure AD) tenant: a GUID or a verified domain
    client_id: str
    client_secret: Secret
    url: str = API  # or a regional API host (us|eu|uk|au.api.security.microsoft.com), a proxy, an emulator
    login_url: str = LOGIN  # the identity platform (another cloud, or an emulator)

    def __post_init__(self) -> None:
        for key in ("url", "login_url"):
            value = getattr(self, key)
            if not value.startswith(("https://", "http://")) or "?" in value:
                raise ValueError(f"{key} must be a base URL like https://api.securitycenter.microsoft.com")
        if not self.tenant_id.strip() or "/" in self.tenant_id or not self.client_id.strip():
            raise ValueError("tenant_id and client_id must be plain identifiers")


def decode(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamDataError(f"{what}: reply is not JSON") from exc
    except RecursionError:
        raise UpstreamDataError(f"{what}: reply is nested too deeply to parse") from None


def _aad_reason(resp: httpx.Response) -> str:
    """``error`` and the AADSTS code of an identity platform refusal (its description holds no secret)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code = str(body.get("error_description") or "").split(":", 1)[0]
    parts = [str(body.get("error") or ""), code if code.startswith("AADSTS") else ""]
    return " ".join(p for p in parts if p)


class DefenderApi:
    """One tenant's API client: the token and the calls that carry it."""

    def __init__(self, client: httpx.AsyncClient, tenant: DefenderTenant) -> None:
        self.client = client
        self.tenant = tenant
        self.base = tenant.url.rstrip("/")
        self.token_url = f"{tenant.login_url.rstrip('/')}/{tenant.tenant_id}/oauth2/v2.0/token"
        self._token: str | None = None
        self._expires = 0.0
        self._lock = trio.Lock()

    async def fetch_token(self, stale: str | None = None) -> str:
        """A new token (unless another task renewed ``stale`` meanwhile)."""
        async with self._lock:
            if self._token is not None and self._token != stale and trio.current_time() < self._expires:
                return self._token
            what = "Entra ID token request"
            with map_http_errors(what):
                resp = await self.client.post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.tenant.client_id,
                        "client_secret": self.tenant.client_secret,
                        "scope": SCOPE,
                    },
                )
            if resp.status_code in (400, 401, 403):
                raise AuthError(
                    f"{what}: HTTP {resp.status_code} {_aad_reason(resp)}: app credentials rejected "
                    "(check tenant_id, client_id and client_secret)".replace("  ", " ")
                )
            raise_for_status(resp, what)
            body = decode(resp, what)
            self._token, self._expires = bearer_token(body, what, default_ttl=3599.0, margin=TOKEN_MARGIN)
            return self._token

    async def _token_now(self) -> str:
        if self._token is not None and trio.current_time() < self._expires:
            return self._token
        return await self.fetch_token(self._token)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One call with the bearer token (``path`` on the API, or a checked absolute nextLink)."""
        url = path if path.startswith(("https://", "http://")) else self.base + path
        what = f"Defender {method} {httpx.URL(url).path}"
        token = await self._token_now()
        for attempt in (1, 2):
            with map_http_errors(what):
                resp = await self.client.request(
                    method, url, params=params, json=json, headers={"Authorization": f"Bearer {token}"}
                )
            if resp.status_code != 401:
                break
            if attempt == 2:
                raise AuthError(f"{what}: HTTP 401 even with a new token")
            token = await self.fetch_token(token)
        if resp.status_code in accept:
            return resp
        if resp.status_code == 400:
            raise UpstreamDataError(f"{what}: HTTP 400 {error_reason(decode(resp, what))}")
        raise_for_status(resp, what)
        return resp

    def checked_link(self, link: str) -> str:
        """``@odata.nextLink`` if it stays on the API's origin (it will carry the token)."""
        try:
            same = origin_of(link) == origin_of(self.base)
        except (httpx.InvalidURL, ValueError):
            same = False
        if not same:
            raise UpstreamDataError(
                f"Defender: refused an @odata.nextLink to another origin ({origin_text(link)}): "
                "the token is only sent to the API's own origin"
            )
        return link

    async def pages(self, path: str, params: dict[str, Any], start: str | None = None) -> AsyncIterator[tuple]:
        """``(rows, next link)`` per page of a list, from ``start`` (a link) or the first page."""
        link = self.checked_link(start) if start else None
        for _ in range(MAX_PAGES):
            resp = await self.request("GET", link or path, params=None if link else params)
            body = decode(resp, f"Defender GET {path}")
            rows = body.get("value") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise UpstreamDataError(f"Defender GET {path}: reply has no value list")
            nxt = next_link(body)
            nxt = self.checked_link(nxt) if nxt and nxt != link else None
            yield rows, nxt
            if nxt is None:
                return
            link = nxt
        raise UpstreamDataError(f"Defender GET {path}: more than {MAX_PAGES} pages")
