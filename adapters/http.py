"""Shared HTTP plumbing for adapters: the client, and translating failures.

Adapters receive an ``httpx.AsyncClient`` built here from their connection
options (proxy, TLS), so tests can inject one over ``httpx.MockTransport`` or a
local server. The client has no timeout of its own: the actor that drives the
adapter owns the deadline (``timeout`` of the plugin).

``map_http_errors`` and ``raise_for_status`` translate failures into the error
classes of ``ctd.errors``, grouped by what the actor does next: retry with
backoff (network errors, 429, 5xx; with the peer's Retry-After), disable until
reload (401/403), or skip (undecodable data).
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpx
import msgspec

from ctd import __version__
from ctd.errors import AuthError, SourceUnavailable, UpstreamDataError, describe

USER_AGENT = f"ctd/{__version__} (threat-exchange daemon)"


class HttpOptions(msgspec.Struct, kw_only=True, frozen=True):
    """Connection keys every HTTP adapter accepts (mix into the adapter's Config)."""

    proxy: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None


def make_client(opts: HttpOptions, *, base_url: str = "", headers: dict[str, str] | None = None,
                auth: httpx.Auth | tuple[str, str] | None = None) -> httpx.AsyncClient:
    verify: bool | ssl.SSLContext = opts.verify_tls
    if opts.verify_tls and opts.ca_file:
        verify = ssl.create_default_context(cafile=opts.ca_file)
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        auth=auth,
        proxy=opts.proxy,
        verify=verify,
        timeout=httpx.Timeout(None),  # the actor's deadline applies, not the client's
        follow_redirects=True,
    )


@contextmanager
def map_http_errors(what: str) -> Iterator[None]:
    """Translate httpx transport errors raised inside the block."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(f"{what}: timed out ({describe(exc)})") from exc
    except httpx.TransportError as exc:  # connect, read, write, proxy, TLS
        raise SourceUnavailable(f"{what}: {type(exc).__name__}: {describe(exc)}") from exc
    except httpx.DecodingError as exc:
        raise UpstreamDataError(f"{what}: undecodable response: {describe(exc)}") from exc


def retry_after(resp: httpx.Response, extra_headers: Iterable[str] = ()) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or a vendor header.

    Vendor headers may hold seconds, or an epoch time (values > 10^9).
    """
    now = time.time()
    value = resp.headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - now)
        except (TypeError, ValueError):
            pass
    for name in extra_headers:
        raw = resp.headers.get(name)
        if raw is None:
            continue
        try:
            v = float(raw.strip())
        except ValueError:
            continue
        return max(0.0, v - now) if v > 1e9 else v
    return None


def raise_for_status(resp: httpx.Response, what: str, *, retry_headers: Iterable[str] = ()) -> None:
    """Raise the ctd error for a failed response (never includes request headers or secrets)."""
    code = resp.status_code
    if code < 400:
        return
    reason = f"{what}: HTTP {code} {resp.reason_phrase}".rstrip()
    if code in (401, 403):
        raise AuthError(reason)
    if code == 429 or code >= 500:
        raise SourceUnavailable(reason, retry_after=retry_after(resp, retry_headers))
    raise UpstreamDataError(reason)
