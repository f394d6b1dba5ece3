"""Thin HTTP calls to a Netskope tenant, and the tenant's connection settings.

One method per endpoint; each translates transport failures, 401/403,
429/5xx (with ``ratelimit-reset`` as the retry hint) into ``ctd.errors`` and
returns decoded JSON. Replies whose meaning depends on the call (a 400 that
names rejected values, the v1 "no change" reply) are returned to the adapter.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ctd.adapters.http import HttpOptions, map_http_errors, raise_for_status
from ctd.model import AuthError, Secret, UpstreamDataError

RATE_HEADERS = ("ratelimit-reset",)  # seconds until the budget refills (the tenant's hint)

_dec = msgspec.json.Decoder()


class TenantConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[tenants.NAME]``: one Netskope tenant, shared by every plugin that names it."""

    url: str  # https://<tenant>.goskope.com
    token: Secret  # REST API v2 token (Netskope-Api-Token)
    v1_token: Secret | None = None  # REST API v1 token, only for the file hash list

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")) or "?" in self.url:
            raise ValueError("url must be the tenant's base URL, e.g. https://example.goskope.com")
        if not self.token.strip():
            raise ValueError("token must not be empty")


class NetskopeApi:
    """The endpoints the adapter uses, on an injected client."""

    def __init__(self, client: httpx.AsyncClient, tenant: TenantConfig) -> None:
        self.client = client
        self.base = tenant.url.rstrip("/")
        self.tenant = tenant
        # Set per request, not on the client: tests inject their own client.
        self._v2 = {"Netskope-Api-Token": tenant.token, "Accept": "application/json"}

    async def _send(
        self, method: str, path: str, what: str, *, v2: bool = True, ok: tuple[int, ...] = (), **kw: Any
    ) -> httpx.Response:
        with map_http_errors(what):
            resp = await self.client.request(method, self.base + path, headers=self._v2 if v2 else None, **kw)
        if resp.status_code not in ok:
            raise_for_status(resp, what, retry_headers=RATE_HEADERS)
        return resp

    @staticmethod
    def decode(resp: httpx.Response, what: str) -> Any:
        try:
            return _dec.decode(resp.content)
        except msgspec.DecodeError as exc:
            raise UpstreamDataError(f"{what}: reply is not JSON") from exc
        except RecursionError:
            raise UpstreamDataError(f"{what}: reply is nested too deeply to parse") from None

    # --- data export ----------------------------------------------------------

    async def alerts(self, kind: str, index: str, operation: str) -> dict:
        """One page of the data-export iterator (gzip is negotiated by httpx)."""
        what = f"alerts/{kind} ({operation})"
        resp = await self._send(
            "GET", f"/api/v2/events/dataexport/alerts/{kind}", what, params={"index": index, "operation": operation}
        )
        body = self.decode(resp, what)
        if not isinstance(body, dict) or not isinstance(body.get("result", []), list):
            raise UpstreamDataError(f"{what}: unexpected reply")
        if body.get("ok") in (0, False):
            raise UpstreamDataError(f"{what}: tenant says not ok: {body.get('message') or body.get('error')}")
        return body

    # --- URL lists ---------------------------------------------------------------

    async def url_lists(self, *, with_data: bool = False) -> Any:
        resp = await self._send(
            "GET",
            "/api/v2/policy/urllist",
            "list URL lists",
            params={"field": "id,name,data" if with_data else "id,name"},
        )
        return self.decode(resp, "list URL lists")

    async def create_list(self, name: str, urls: list[str], list_type: str) -> httpx.Response:
        return await self._send(
            "POST",
            "/api/v2/policy/urllist",
            f"create URL list {name!r}",
            ok=(400,),
            json={"name": name, "data": {"urls": urls, "type": list_type}},
        )

    async def update_list(
        self, ident: int | str, how: str, urls: list[str], list_type: str, name: str
    ) -> httpx.Response:
        """``how`` is ``append`` or ``replace``; a 400 is returned (it names rejected values)."""
        return await self._send(
            "PATCH",
            f"/api/v2/policy/urllist/{ident}/{how}",
            f"{how} URL list {name!r}",
            ok=(400,),
            json={"data": {"urls": urls, "type": list_type}},
        )

    async def deploy(self) -> None:
        """Apply pending URL list changes to the policies that use them."""
        await self._send("POST", "/api/v2/policy/urllist/deploy", "deploy URL lists")

    # --- v1 file hash list ----------------------------------------------------------

    async def update_hash_list(self, name: str, hashes: str) -> Any:
        what = f"update file hash list {name!r}"
        if not self.tenant.v1_token:
            raise AuthError(f"{what}: the tenant has no v1_token (needed for the file hash list)")
        # The token goes in the body, not the query string, so no URL ever carries it.
        resp = await self._send(
            "POST",
            "/api/v1/updateFileHashList",
            what,
            v2=False,
            json={"name": name, "list": hashes, "token": self.tenant.v1_token},
        )
        return self.decode(resp, what)
