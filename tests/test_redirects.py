"""The redirect policy of the shared HTTP layer, over real sockets.

127.0.0.1 is the configured origin; a recording server on 127.0.0.2 is
"another origin". Same-origin redirects are followed as before; a
cross-origin one fails the call with an error naming both origins, unless
the plugin lists the other origin (feeds: ``allow_redirects_to``), in which
case it is followed with no secret header, no credentials and no body.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import httpx
import pytest

from ctd.adapters.http import HttpOptions, make_client, map_http_errors
from ctd.config import parse_config
from ctd.errors import AdapterError, UpstreamDataError
from ctd.model import PullContext, ShareItem
from ctd.plugins import open_adapter
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.loopback import Received, ok, redirect_to, serve

AUTH_KEY = "feed-auth-key-0001"
HEADER_SECRET = "custom-header-secret-0002"
NS_TOKEN = "netskope-v2-token-0003"
NS_V1 = "netskope-v1-token-0004"
CS_SECRET = "crowdstrike-client-secret-0005"
MISP_KEY = "m" * 40
SECRETS = (AUTH_KEY, HEADER_SECRET, NS_TOKEN, NS_V1, CS_SECRET, MISP_KEY)
FEED = b"198.51.100.7\n198.51.100.8\n"
CTX = PullContext(since=0, now=1_800_000_000)


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def other():
    """The other origin: records everything, answers 200 with a feed body."""
    with serve("127.0.0.2", ok(FEED)) as srv:
        yield srv


def assert_nothing_secret(server) -> None:
    seen = server.everything()
    for secret in SECRETS:
        assert secret not in seen


def adapter_from(toml: str, name: str):
    """Plugin ``name`` of ``toml``, as ``open_adapter`` takes it."""
    cfg = parse_config(toml)
    return name, cfg.plugins[name]


def feed_toml(url: str, extra: str = "") -> str:
    return (
        f'[plugins.f]\nadapter = "feed"\nurl = "{url}"\nauth_key = "{AUTH_KEY}"\n'
        f'headers = {{ X-Feed-Key = "{HEADER_SECRET}" }}\n{extra}'
    )


async def pull_all(plugin):
    async with open_adapter(*plugin) as adapter:
        return [b async for b in adapter.pull(CTX)]


# --- feeds -----------------------------------------------------------------------------------


def test_daemon_refuses_a_feed_redirect_to_another_origin(other):
    """The real daemon: a feed redirected to another host fails the pull naming both hosts; nothing arrives there."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/mirror/feed.txt")) as origin:
        d = DaemonProc(short_tmpdir(), feed_toml(f"{origin.base}/feeds/feed.txt", 'sync_interval = "1h"\n'))
        try:
            d.start().wait_ready()
            res = json.loads(d.ctl("--json", "sync", "f").stdout)
            assert res["error"] and origin.base in res["error"] and other.base in res["error"], res
            assert "/mirror" not in res["error"]  # origins only: paths may carry keys
            assert d.stop() == 0
            logs = d.log.read_text()
            assert "source pull crashed" not in logs
            for secret in SECRETS:
                assert secret not in logs
        finally:
            d.cleanup()
    assert origin.received and all(AUTH_KEY in r.text() for r in origin.received)
    assert other.received == []


async def test_feed_opt_in_follows_to_a_listed_origin_without_secrets(other):
    """With allow_redirects_to, the feed follows to that origin with no Auth-Key and no custom headers."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/mirror/feed.txt")) as origin:
        toml = feed_toml(f"{origin.base}/feed.txt", f'allow_redirects_to = ["{other.base}"]\n')
        batches = await pull_all(adapter_from(toml, "f"))
    assert [s.value for b in batches for s in b.sightings] == ["198.51.100.7", "198.51.100.8"]
    assert [(r.method, r.target) for r in other.received] == [("GET", "/mirror/feed.txt")]
    names = {k.lower() for k, _ in other.received[0].headers}
    assert not names & {"auth-key", "x-feed-key", "authorization", "cookie"}
    assert_nothing_secret(other)


async def test_feed_opt_in_does_not_open_other_origins(other):
    """An origin not listed in allow_redirects_to is still refused."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/feed.txt")) as origin:
        toml = feed_toml(f"{origin.base}/feed.txt", 'allow_redirects_to = ["https://cdn.example"]\n')
        with pytest.raises(UpstreamDataError, match="127.0.0.2"):
            await pull_all(adapter_from(toml, "f"))
    assert other.received == []


async def test_feed_same_origin_redirect_keeps_its_credentials():
    """A redirect within the feed's own origin is followed with the Auth-Key and custom headers."""

    def handle(req: Received):
        if req.target == "/old/feed.txt":
            return 301, {"Location": "/new/feed.txt"}, b""
        key = dict((k.lower(), v) for k, v in req.headers).get("auth-key")
        return (200, {}, FEED) if key == AUTH_KEY else (401, {}, b"")

    with serve("127.0.0.1", handle) as origin:
        batches = await pull_all(adapter_from(feed_toml(f"{origin.base}/old/feed.txt"), "f"))
    assert len([s for b in batches for s in b.sightings]) == 2
    assert [r.target for r in origin.received] == ["/old/feed.txt", "/new/feed.txt"]
    assert HEADER_SECRET in origin.received[1].text()


async def test_scheme_change_is_another_origin(other):
    """http -> https on the same host is another origin too (the operator configures the https URL)."""
    with serve("127.0.0.1", redirect_to("https://127.0.0.1:1/feed.txt")) as origin:
        with pytest.raises(UpstreamDataError, match="https://127.0.0.1:1"):
            await pull_all(adapter_from(feed_toml(f"{origin.base}/feed.txt"), "f"))


async def test_redirect_loop_is_a_data_error():
    """A server redirecting forever fails the pull as UpstreamDataError (not a crash)."""
    with serve("127.0.0.1", redirect_to("/again")) as origin:
        with pytest.raises(UpstreamDataError, match="redirects"):
            await pull_all(adapter_from(feed_toml(f"{origin.base}/feed.txt"), "f"))
    assert 2 <= len(origin.received) <= 30


async def test_too_many_redirects_from_any_client_is_a_data_error():
    """httpx.TooManyRedirects (a client that follows by itself) is translated to UpstreamDataError."""
    with serve("127.0.0.1", redirect_to("/again")) as origin:
        async with httpx.AsyncClient(follow_redirects=True, max_redirects=3, trust_env=False) as client:
            with pytest.raises(UpstreamDataError, match="too many redirects"):
                with map_http_errors("test"):
                    await client.get(origin.base)


# --- the shared layer: bodies never travel to another origin -----------------------------------


async def test_a_307_never_resends_a_body_to_another_origin_even_when_listed(other):
    """A 307/308 after a POST to a listed origin is refused: the body would be re-sent there."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/sink", 307)) as origin:
        async with make_client(HttpOptions(), allow_redirects_to=[other.base]) as client:
            with pytest.raises(UpstreamDataError, match="body"):
                with map_http_errors("post"):
                    await client.post(f"{origin.base}/api", content=CS_SECRET.encode(), headers={"X-Token": NS_TOKEN})
    assert other.received == []


async def test_a_303_after_a_post_reaches_a_listed_origin_as_a_bare_get(other):
    """A 303 to a listed origin becomes a GET without the body and without the request's headers."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/result", 303)) as origin:
        async with make_client(HttpOptions(), allow_redirects_to=[other.base], auth=("user", NS_V1)) as client:
            with map_http_errors("post"):
                resp = await client.post(
                    f"{origin.base}/api", content=CS_SECRET.encode(), headers={"X-Token": NS_TOKEN}
                )
    assert resp.status_code == 200 and resp.content == FEED
    assert [(r.method, r.body) for r in other.received] == [("GET", b"")]
    assert_nothing_secret(other)
    assert "authorization" not in {k.lower() for k, _ in other.received[0].headers}


# --- API adapters: no opt-in, a cross-origin redirect always fails -----------------------------


def tenant_toml(url: str) -> str:
    return (
        f'[tenants.t]\nurl = "{url}"\ntoken = "{NS_TOKEN}"\nv1_token = "{NS_V1}"\n'
        '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\nalert_types = ["malsite"]\n'
    )


async def test_netskope_token_never_reaches_another_origin(other):
    """A tenant redirecting the alerts call elsewhere: refused, Netskope-Api-Token never sent there."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/api/v2/events/dataexport/alerts/malsite")) as origin:
        with pytest.raises(UpstreamDataError, match="127.0.0.2") as exc:
            await pull_all(adapter_from(tenant_toml(origin.base), "ns"))
    assert origin.base in str(exc.value)
    assert other.received == []
    assert NS_TOKEN in origin.everything()


async def test_netskope_v1_token_body_is_not_reposted_to_another_origin(other):
    """A 307 on the file hash list update (v1 token in the body) is not followed."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/api/v1/updateFileHashList", 307)) as origin:
        cfg = parse_config(tenant_toml(origin.base).replace('alert_types = ["malsite"]\n', "pull = false\n"))
        item = ShareItem(
            type="sha256",
            value="a" * 64,
            severity="high",
            reputation=5,
            tags=(),
            comments="",
            reference="",
            first_seen=None,
            last_seen=None,
            expires_at=None,
            sources=("x",),
        )
        async with open_adapter("ns", cfg.plugins["ns"]) as ns:
            params = ns.ACTIONS["file_hash_list"].params(list="ctd-hashes")
            with pytest.raises(UpstreamDataError, match="127.0.0.2"):
                await ns.replace("file_hash_list", params, [item])
    assert other.received == []


def cs_toml(url: str) -> str:
    return (
        f'[plugins.cs]\nadapter = "crowdstrike"\nclient_id = "cid"\nclient_secret = "{CS_SECRET}"\nbase_url = "{url}"\n'
    )


async def test_crowdstrike_client_secret_is_not_reposted_on_a_307(other):
    """A 307 on the OAuth token POST to another host is refused: client_secret is never re-POSTed there."""
    with serve("127.0.0.1", redirect_to(f"{other.base}/oauth2/token", 307)) as origin:
        with pytest.raises(UpstreamDataError, match="127.0.0.2"):
            await pull_all(adapter_from(cs_toml(origin.base), "cs"))
    assert CS_SECRET in origin.everything()
    assert other.received == []


async def test_crowdstrike_same_origin_307_reposts_the_token_request():
    """A 307 within the API's origin re-POSTs the token request there (RFC 9110), and the pull goes on."""

    def handle(req: Received):
        if req.target == "/oauth2/token":
            return 307, {"Location": "/oauth2/token2"}, b""
        if req.target == "/oauth2/token2":
            if CS_SECRET.encode() not in req.body:
                return 401, {}, b"{}"
            return (
                201,
                {"Content-Type": "application/json"},
                json.dumps({"access_token": "tok", "token_type": "bearer", "expires_in": 1799}).encode(),
            )
        return 200, {"Content-Type": "application/json"}, b'{"meta": {}, "resources": [], "errors": []}'

    with serve("127.0.0.1", handle) as origin:
        batches = await pull_all(adapter_from(cs_toml(origin.base), "cs"))
    assert len(batches) == 1 and not batches[0].sightings
    assert [r.target for r in origin.received][:2] == ["/oauth2/token", "/oauth2/token2"]


async def test_misp_api_key_never_reaches_another_origin(other):
    """A MISP redirecting restSearch elsewhere is refused; the API key and the search are not sent there."""
    toml = f'[plugins.m]\nadapter = "misp"\nurl = "URL"\napi_key = "{MISP_KEY}"\n'
    with ExitStack() as stack:
        origin = stack.enter_context(serve("127.0.0.1", redirect_to(f"{other.base}/attributes/restSearch", 307)))
        with pytest.raises(UpstreamDataError, match="127.0.0.2"):
            await pull_all(adapter_from(toml.replace("URL", origin.base), "m"))
    assert other.received == []


async def test_invalid_location_fails_the_call_as_an_adapter_error():
    """A redirect whose Location is not a URL is a protocol error of the peer (AdapterError), not a crash."""
    with serve("127.0.0.1", redirect_to("http://[::1")) as origin:
        with pytest.raises(AdapterError, match="(?i)location"):
            await pull_all(adapter_from(feed_toml(f"{origin.base}/feed.txt"), "f"))
