"""Shared HTTP plumbing for adapters: the client, and translating failures.

Adapters receive an ``httpx.AsyncClient`` built here from their connection
options (proxy, TLS), so tests can inject one over ``httpx.MockTransport`` or a
local server. The client has no timeout of its own: the actor that drives the
adapter owns the deadline (``timeout`` of the plugin).

``map_http_errors`` and ``raise_for_status`` translate failures into the error
classes of ``ctd.errors``, grouped by what the actor does next: retry with
backoff (network errors, 429, 5xx; with the peer's Retry-After), disable until
reload (401/403), or skip (undecodable data, refused redirects).

Redirects: the client follows a redirect only within the origin (scheme, host
and port) of the request it started from. httpx by itself strips only
``Authorization`` on a cross-origin hop, so a feed's ``Auth-Key``, a vendor
token header, a custom header or a re-POSTed ``client_secret`` would reach the
other host. Here a cross-origin redirect fails the call with an error naming
both origins, unless the plugin listed the target origin
(``allow_redirects_to``): then it is followed as a bare GET with only
non-secret headers, no credentials and no body. A redirect that would re-send a
request body to another origin (307/308) is always refused.

Proxies: ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` from the
environment are honoured unless the plugin says ``proxy = ""`` (no proxy at
all) or names its own ``proxy``.

Response size: a body the client reads whole (every request not made with
``stream``) is read here, not by httpx, and capped at ``max_response_bytes``
(default 64 MiB) both on the wire and after decompression: httpx would inflate
a gzip bomb without limit, and one 64 KiB chunk of one can inflate to 64 MiB.
The gzip/deflate decoder here bounds each step's output instead, so a body
over the cap fails the call (``UpstreamDataError: response larger than N
bytes``) having held at most the cap. A streamed body is read with
``decoded_body`` under the same bounds.
"""

from __future__ import annotations

import email.utils
import math
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from contextlib import aclosing, contextmanager
from typing import Annotated, Any, cast

import httpx
import msgspec
import structlog
import trio

from ctd import __version__
from ctd.model import AuthError, Secret, SourceUnavailable, UpstreamDataError, describe

USER_AGENT = f"ctd/{__version__} (threat-exchange daemon)"
DEFAULT_MAX_RESPONSE = 64 << 20
# The longest wait a server may ask for (Retry-After, vendor rate-limit headers): the
# source actor's backoff cap. A server cannot postpone its own source's next pull for days.
MAX_RETRY_AFTER = 3600.0

log = structlog.get_logger("ctd.adapters.http")


class HttpOptions(msgspec.Struct, kw_only=True, frozen=True):
    """Connection keys every HTTP adapter accepts (mix into the adapter's Config).

    ``proxy``: unset honours the environment's HTTP(S)_PROXY/NO_PROXY; ``""``
    disables every proxy; a URL is used for all requests.
    """

    proxy: Secret | None = None  # a Secret: the URL may carry user:password
    verify_tls: bool = True
    ca_file: str | None = None
    # The largest body read whole, on the wire and decompressed (see the module docstring).
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 32)] = DEFAULT_MAX_RESPONSE


# Headers that carry no credential and may follow a redirect to a listed other origin.
SAFE_HEADERS = ("user-agent", "accept", "accept-encoding", "accept-language", "if-none-match", "if-modified-since")
MAX_REDIRECTS = 10
ACCEPT_ENCODING = "gzip, deflate"  # what decoded_body can decode, whatever httpx could
_DEFAULT_PORTS = {"http": 80, "https": 443}


class RedirectRefused(httpx.RequestError):
    """A redirect the policy does not follow (another origin, or a body to another origin)."""


class ResponseTooLarge(httpx.RequestError):
    """A body over ``max_response_bytes``, on the wire or decompressed."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(scheme)


def origin_of(url: httpx.URL | str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: what "same origin" compares."""
    return _origin(httpx.URL(url))


def origin_text(url: httpx.URL | str) -> str:
    """``scheme://host[:port]`` of a URL, for messages: never a path or query (they may hold keys)."""
    u = httpx.URL(url)
    host = u.host
    host = f"[{host}]" if ":" in host else host
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")


def parse_origins(values: Iterable[str], key: str = "allow_redirects_to") -> frozenset[tuple[str, str, int | None]]:
    """Origins given as ``https://host[:port]``; raises ValueError for anything else."""
    out = set()
    for v in values:
        try:
            u = httpx.URL(v)
        except httpx.InvalidURL:
            raise ValueError(f"{key}: {v!r} is not a URL") from None
        if (
            u.scheme not in ("http", "https")
            or not u.host
            or u.path not in ("", "/")
            or u.query
            or u.fragment
            or u.userinfo
        ):
            raise ValueError(f"{key}: {v!r} must be an origin like https://host or https://host:8443")
        out.add(_origin(u))
    return frozenset(out)


class PolicyClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that follows redirects by ctd's origin policy (see the module docstring).

    Every request of every adapter goes through ``send``, so the policy applies
    to ``get``/``post``/``request``/``stream`` alike without adapters opting in.
    """

    def __init__(
        self,
        *,
        allow_redirects_to: Iterable[str] = (),
        option: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE,
        **kwargs: Any,
    ) -> None:
        super().__init__(follow_redirects=True, max_redirects=MAX_REDIRECTS, **kwargs)
        self.other_origins = parse_origins(allow_redirects_to)
        self.option = option  # the config key that lists other origins, named in the error
        self.max_response_bytes = max_response_bytes

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        follow = follow_redirects if isinstance(follow_redirects, bool) else self.follow_redirects
        if not follow:
            response = await super().send(request, stream=True, auth=auth, follow_redirects=False)
            return response if stream else await self._read(response)
        start = _origin(request.url)
        history: list[httpx.Response] = []
        while True:
            response = await super().send(request, stream=True, auth=auth, follow_redirects=False)
            if not response.has_redirect_location:
                break
            try:
                if len(history) >= self.max_redirects:
                    raise httpx.TooManyRedirects(f"more than {self.max_redirects} redirects", request=request)
                request, left = self._next_request(request, response, start)
            finally:
                await response.aclose()  # its body is not read: a hostile one could be huge
            if left:
                auth = None  # no client credentials (Basic) once off the origin
            history.append(response)
        response.history = history
        return response if stream else await self._read(response)

    async def _read(self, response: httpx.Response) -> httpx.Response:
        """Read the body within ``max_response_bytes`` (in place of httpx's unbounded ``aread``)."""
        try:
            pieces = [piece async for piece in decoded_body(response, self.max_response_bytes)]
            response._content = b"".join(pieces)  # where httpx's own aread keeps it: .content, .json(), .text
        except BaseException:
            await response.aclose()
            raise
        return response

    def _next_request(
        self, request: httpx.Request, response: httpx.Response, start: tuple[str, str, int | None]
    ) -> tuple[httpx.Request, bool]:
        """The request that follows ``response``, and whether it leaves the starting origin."""
        try:
            url = request.url.join(response.headers["Location"])
        except (httpx.InvalidURL, UnicodeError):
            raise RedirectRefused(f"{response.status_code} with an invalid Location", request=request) from None
        method = request.method
        code = response.status_code
        if method != "HEAD" and (code in (302, 303) or (code == 301 and method == "POST")):
            method = "GET"  # as httpx and browsers do; the body is dropped
        keeps_body = method not in ("GET", "HEAD")  # a 307/308 repeats the method and its body
        there = _origin(url)
        if there == start and _origin(request.url) == start:
            headers = httpx.Headers(request.headers)
            for name in ("cookie",) + (() if keeps_body else ("content-length", "transfer-encoding", "content-type")):
                headers.pop(name, None)
            headers["Host"] = url.netloc.decode("ascii")
            stream = request.stream if keeps_body else None
            return httpx.Request(
                method, url, headers=headers, stream=stream, cookies=self.cookies, extensions=request.extensions
            ), False
        hop = f"redirect from {origin_text(request.url)} to another origin {origin_text(url)}"
        if there not in self.other_origins and there != start:
            hint = f"; list it in {self.option} to follow it without credentials" if self.option else ""
            raise RedirectRefused(
                f"refused a {hop}: credentials are never sent to another origin{hint}", request=request
            )
        if keeps_body:
            raise RedirectRefused(
                f"refused a {hop}: a {code} would re-send the {method} and its body there", request=request
            )
        safe = {k: v for k, v in request.headers.items() if k.lower() in SAFE_HEADERS}
        return httpx.Request(method, url, headers=safe, extensions=request.extensions), True


class _Inflate:
    """A Content-Encoding (gzip, deflate or none) decoded in bounded steps: at most PIECE bytes out per step."""

    PIECE = 1 << 16

    def __init__(self, encoding: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip().lower() not in ("", "identity")]
        if not codings:
            self.wbits: int | None = None
        elif codings in (["gzip"], ["x-gzip"]):
            self.wbits = 31
        elif codings == ["deflate"]:
            self.wbits = 15  # zlib-wrapped, as RFC 9110 says; a raw deflate stream is tried if that fails
        else:
            raise httpx.DecodingError(f"unsupported Content-Encoding {encoding[:40]!r}")
        self.d = zlib.decompressobj(self.wbits) if self.wbits else None
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.d is None:
            yield data
            return
        while data:
            try:
                out = self.d.decompress(data, self.PIECE)
            except zlib.error as exc:
                if self.wbits == 15 and not self.started:  # a raw deflate stream, as some servers send
                    self.wbits, self.d = -15, zlib.decompressobj(-15)
                    continue
                raise httpx.DecodingError(f"corrupt compressed body: {exc}") from None
            self.started = True
            if out:
                yield out
            data = self.d.unconsumed_tail
            if not data and self.d.eof and self.d.unused_data and self.wbits == 31:
                data = self.d.unused_data  # the next gzip member
                self.d = zlib.decompressobj(31)

    def finish(self) -> None:
        if self.d is not None and self.started and not self.d.eof:
            raise httpx.DecodingError("truncated compressed body")


async def decoded_body(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The body decoded, piece by piece; raises ResponseTooLarge past ``limit`` bytes, on the wire or decoded.

    Call within ``map_http_errors`` (the errors are httpx's).
    """
    if response.is_stream_consumed:  # built whole (httpx.MockTransport in tests): httpx has decoded it
        content = response.content
        if len(content) > limit:
            raise ResponseTooLarge(f"response larger than {limit} bytes (max_response_bytes)")
        if content:
            yield content
        return
    inflate = _Inflate(response.headers.get("content-encoding", ""))
    wire = size = 0
    # aiter_raw is an async generator (typed as an iterator): close it even when we stop early.
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_raw())) as raws:
        async for raw in raws:
            wire += len(raw)
            if wire > limit:
                raise ResponseTooLarge(f"response larger than {limit} bytes (max_response_bytes)")
            for piece in inflate.feed(raw):
                size += len(piece)
                if size > limit:
                    raise ResponseTooLarge(f"response larger than {limit} bytes (max_response_bytes)")
                yield piece
    inflate.finish()


def make_client(
    opts: HttpOptions,
    *,
    base_url: str = "",
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    allow_redirects_to: Iterable[str] = (),
    redirect_option: str | None = None,
) -> httpx.AsyncClient:
    """The client for one plugin: its TLS and proxy settings, and the redirect policy.

    ``allow_redirects_to``: other origins a redirect may lead to (followed without
    secrets); ``redirect_option`` names the config key that lists them, for errors.
    """
    verify: bool | ssl.SSLContext = opts.verify_tls
    if opts.verify_tls and opts.ca_file:
        verify = ssl.create_default_context(cafile=opts.ca_file)
    return PolicyClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
        auth=auth,
        proxy=opts.proxy or None,
        trust_env=opts.proxy != "",  # proxy = "": no proxy at all, not even from the environment
        verify=verify,
        timeout=httpx.Timeout(None),  # the actor's deadline applies, not the client's
        allow_redirects_to=allow_redirects_to,
        option=redirect_option,
        max_response_bytes=opts.max_response_bytes,
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
    except (RedirectRefused, ResponseTooLarge) as exc:
        raise UpstreamDataError(f"{what}: {exc}") from exc
    except httpx.TooManyRedirects as exc:
        raise UpstreamDataError(f"{what}: too many redirects ({exc})") from exc
    except RecursionError as exc:  # a hostile body nested deeper than any parser's stack
        raise UpstreamDataError(f"{what}: response is nested too deeply to parse") from exc


def retry_after(resp: httpx.Response, extra_headers: Iterable[str] = ()) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or a vendor header, at most MAX_RETRY_AFTER.

    Vendor headers may hold seconds, or an epoch time (values > 10^9). A wait
    over the cap is capped and logged (``retry_after_capped``).
    """
    wait = _requested_wait(resp, extra_headers)
    if wait is None or wait <= MAX_RETRY_AFTER:
        return wait
    try:
        origin = origin_text(resp.request.url)
    except RuntimeError:  # a response built without a request (tests)
        origin = "?"
    log.warning(
        "server asked for a longer wait than ctd allows; capped",
        ctd_event="retry_after_capped",
        origin=origin,
        requested_s=wait if math.isfinite(wait) else str(wait),
        retry_after_s=MAX_RETRY_AFTER,
    )
    return MAX_RETRY_AFTER


def _requested_wait(resp: httpx.Response, extra_headers: Iterable[str]) -> float | None:
    now = time.time()
    value = resp.headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - now)
        except (TypeError, ValueError, OverflowError):
            pass
    for name in extra_headers:
        raw = resp.headers.get(name)
        if raw is None:
            continue
        try:
            v = float(raw.strip())
        except ValueError:
            continue
        if math.isnan(v):
            continue
        return max(0.0, v - now) if v > 1e9 else max(0.0, v)
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


def bearer_token(body: Any, what: str, *, default_ttl: float, margin: float) -> tuple[str, float]:
    """An OAuth2 token reply's ``access_token`` and when to renew it (trio clock): ``margin`` seconds
    before ``expires_in`` runs out (``default_ttl`` when the reply gives none). UpstreamDataError
    if the reply holds no token."""
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise UpstreamDataError(f"{what}: no access_token in the reply")
    ttl = body.get("expires_in")
    ttl = (
        float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and 0 < ttl < math.inf else default_ttl
    )
    return token, trio.current_time() + max(0.0, ttl - margin)
