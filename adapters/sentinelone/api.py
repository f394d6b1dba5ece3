"""SentinelOne's management API as the ``sentinelone`` adapter calls it: the console, the API token, the calls.

Every call carries ``Authorization: ApiToken <token>``. SentinelOne API tokens
are per user and expire (the console sets their lifetime); there is no refresh
grant, so a 401 is an ``AuthError`` saying to renew the token: the plugin is
disabled until a reload brings the new one. 429 (with or without
``Retry-After``) and 5xx are ``SourceUnavailable``; a 400 is handed back to the
adapter, which reads the per-item validation errors out of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from ctd.adapters.http import HttpOptions, map_http_errors, raise_for_status
from ctd.adapters.sentinelone.mapping import IOCS, next_cursor
from ctd.model import AuthError, Secret, UpstreamDataError

MAX_PAGES = 10_000  # a cursor that never ends is a broken or hostile server


class SentinelOneTenant(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[tenants.NAME]``: one SentinelOne console and the API token ctd uses there."""

    url: str  # https://<console>.sentinelone.net
    token: Secret  # an API token (a service user's, scoped to the account or site ctd works in)

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")) or "?" in self.url:
            raise ValueError("url must be the console's base URL, e.g. https://example.sentinelone.net")
        if not self.token.strip():
            raise ValueError("token must not be empty")


def decode(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamDataError(f"{what}: reply is not JSON") from exc
    except RecursionError:
        raise UpstreamDataError(f"{what}: reply is nested too deeply to parse") from None


def errors_text(body: Any) -> str:
    """The ``errors`` of a reply as one line (``title: detail``)."""
    parts = []
    for err in body.get("errors") or () if isinstance(body, dict) else ():
        if isinstance(err, dict):
            title, detail = err.get("title") or "", err.get("detail") or ""
            parts.append(f"{title}: {detail}" if title and detail else str(title or detail or err.get("code")))
    return "; ".join(parts)


class SentinelOneApi:
    """One console's calls on an injected client."""

    def __init__(self, client: httpx.AsyncClient, tenant: SentinelOneTenant) -> None:
        self.client = client
        self.tenant = tenant
        self.base = tenant.url.rstrip("/")
        self._auth = {"Authorization": f"ApiToken {tenant.token}", "Accept": "application/json"}

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None, accept=(400,)
    ) -> httpx.Response:
        what = f"SentinelOne {method} {path}"
        with map_http_errors(what):
            resp = await self.client.request(method, self.base + path, params=params, json=json, headers=self._auth)
        if resp.status_code == 401:
            try:
                detail = errors_text(resp.json())
            except (ValueError, RecursionError):
                detail = ""
            raise AuthError(
                f"{what}: HTTP 401{f' ({detail})' if detail else ''}: API token rejected or expired "
                "(generate a new one for the service user, then reload)"
            )
        if resp.status_code in accept:
            return resp
        raise_for_status(resp, what)
        return resp

    async def pages(self, path: str, params: dict[str, Any], cursor: str | None = None) -> AsyncIterator[tuple]:
        """``(rows, next cursor)`` per page of a list, from ``cursor`` or the first page."""
        what = f"SentinelOne GET {path}"
        for _ in range(MAX_PAGES):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            resp = await self.request("GET", path, params=query)
            body = decode(resp, what)
            if resp.status_code == 400:
                raise UpstreamDataError(f"{what}: HTTP 400 {errors_text(body)}".rstrip())
            rows = body.get("data") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise UpstreamDataError(f"{what}: reply has no data list")
            nxt = next_cursor(body)
            nxt = nxt if nxt != cursor else None  # a cursor that does not move would loop forever
            yield rows, nxt
            if nxt is None:
                return
            cursor = nxt
        raise UpstreamDataError(f"{what}: more than {MAX_PAGES} pages")

    async def iocs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every IOC a query selects (all pages)."""
        out: list[dict[str, Any]] = []
        async for rows, _ in self.pages(IOCS, params):
            out += [r for r in rows if isinstance(r, dict)]
        return out
