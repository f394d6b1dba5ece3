"""Falcon's API as the ``crowdstrike`` adapter calls it: OAuth2 client credentials, authenticated requests.

The bearer token is reused until shortly before ``expires_in`` runs out; a
call answered 401 fetches a new token and is sent once more (the documented
way to recover an expired or revoked token); a second 401 is an ``AuthError``.
Rate limits: a 429's ``X-RateLimit-RetryAfter`` (epoch seconds) becomes the
``retry_after`` of the ``SourceUnavailable`` raised.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from ctd.adapters.crowdstrike.mapping import CLOUDS
from ctd.adapters.http import bearer_token, map_http_errors, raise_for_status
from ctd.model import AuthError, Secret, UpstreamDataError

TOKEN_PATH = "/oauth2/token"
COMBINED_PATH = "/iocs/combined/indicator/v1"
ENTITIES_PATH = "/iocs/entities/indicators/v1"
RETRY_HEADERS = ("X-RateLimit-RetryAfter",)  # epoch seconds, per CrowdStrike
TOKEN_MARGIN = 60.0  # renew this long before expiry so a request never carries a dying token


def base_url(options: Any) -> str:
    """The API's base URL: ``base_url`` if set (a proxy, an emulator), else the cloud's."""
    return (options.base_url or CLOUDS[options.cloud]).rstrip("/")


def decode(resp: httpx.Response, what: str) -> Any:
    """A reply's JSON body (UpstreamDataError if it is not JSON)."""
    try:
        return resp.json()
    except ValueError as exc:
        raise UpstreamDataError(f"{what}: response is not JSON") from exc
    except RecursionError:
        raise UpstreamDataError(f"{what}: response is nested too deeply to parse") from None


def errors_text(body: Any) -> str:
    """The messages of a reply's ``errors`` list, as one line."""
    errs = body.get("errors") if isinstance(body, dict) else None
    msgs = [str(e.get("message")) for e in errs or () if isinstance(e, dict) and e.get("message")]
    return "; ".join(msgs)


class FalconApi:
    """One tenant's API client: the token and the calls that carry it."""

    def __init__(self, client: httpx.AsyncClient, client_id: str, client_secret: Secret) -> None:
        self.client = client
        self.client_id = client_id
        self.client_secret = client_secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = trio.Lock()

    async def fetch_token(self, stale: str | None = None) -> str:
        """A new token (unless another task renewed ``stale`` meanwhile)."""
        async with self._lock:
            if self._token is not None and self._token != stale and trio.current_time() < self._expires:
                return self._token  # another task renewed it meanwhile
            what = f"CrowdStrike {TOKEN_PATH}"
            with map_http_errors(what):
                resp = await self.client.post(
                    TOKEN_PATH,
                    data={
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                    },
                )
            if resp.status_code in (400, 401, 403):
                raise AuthError(
                    f"{what}: HTTP {resp.status_code}: client credentials rejected "
                    "(check client_id/client_secret and the cloud)"
                )
            raise_for_status(resp, what, retry_headers=RETRY_HEADERS)
            body = decode(resp, what)
            self._token, self._expires = bearer_token(body, what, default_ttl=1799.0, margin=TOKEN_MARGIN)
            return self._token

    async def _token_now(self) -> str:
        if self._token is not None and trio.current_time() < self._expires:
            return self._token
        return await self.fetch_token(self._token)

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One API call with the bearer token; a 401 renews the token and resends once."""
        token = await self._token_now()
        for attempt in (1, 2):
            with map_http_errors(what):
                resp = await self.client.request(
                    method, path, params=params, json=json, headers={"Authorization": f"Bearer {token}"}
                )
            if resp.status_code != 401:
                break
            if attempt == 2:
                raise AuthError(f"{what}: HTTP 401 even with a new token")
            token = await self.fetch_token(token)
        if resp.status_code in accept:
            return resp
        if resp.status_code == 400:
            detail = errors_text(decode(resp, what)) if resp.content else ""
            raise UpstreamDataError(f"{what}: HTTP 400 {detail}".rstrip())
        raise_for_status(resp, what, retry_headers=RETRY_HEADERS)
        return resp
