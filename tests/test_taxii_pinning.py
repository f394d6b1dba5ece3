"""TAXII discovery pinning: API roots and collections stay on the discovery URL's origin.

A discovery document is data from the server: its ``default``/``api_roots``
may name any host. ctd sends its Basic/Bearer credentials only to the
configured URL's origin, or to origins the plugin lists in
``allow_api_roots_at``. The other origin is a recording server on 127.0.0.2;
the trusted case runs against the real TAXII server (medallion).
"""

from __future__ import annotations

import json

import pytest

from ctd.adapters.taxii.adapter import MEDIA_TYPE, TaxiiAdapter, TaxiiConfig
from ctd.errors import UpstreamDataError
from ctd.model import PullContext
from tests.configutil import decode_options
from tests.loopback import Received, serve
from tests.medallion_server import PASSWORD, USER, Coll, medallion

TOKEN = "taxii-bearer-token-0006"
CTX = PullContext(since=0, now=1_800_000_000)
FEED_ID = "c0f1e2d3-0000-4000-8000-00000000a001"
INDICATOR = {
    "type": "indicator",
    "spec_version": "2.1",
    "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
    "created": "2024-04-01T00:00:00.000Z",
    "modified": "2024-04-01T00:00:00.000Z",
    "pattern": "[domain-name:value = 'pinned.example']",
    "pattern_type": "stix",
    "valid_from": "2024-04-01T00:00:00Z",
}


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


def discovery(**doc) -> object:
    body = json.dumps({"title": "discovery", **doc}).encode()

    def handle(req: Received):
        return 200, {"Content-Type": MEDIA_TYPE}, body

    return handle


def adapter(url: str, **kw) -> TaxiiAdapter:
    creds = {"token": TOKEN} if kw.pop("bearer", False) else {"username": USER, "password": PASSWORD}
    cfg = decode_options({"url": url, "collection": "feed", **creds, **kw}, TaxiiConfig)
    return TaxiiAdapter("taxii", cfg, None)


async def pull_all(a: TaxiiAdapter):
    try:
        return [b async for b in a.pull(CTX)]
    finally:
        await a.aclose()


@pytest.fixture
def other():
    with serve("127.0.0.2") as srv:
        yield srv


@pytest.mark.parametrize("bearer", [False, True], ids=["basic", "bearer"])
async def test_default_api_root_on_another_origin_is_refused(other, bearer):
    """A discovery ``default`` on another host fails the pull naming both; no credentials are sent there."""
    with serve("127.0.0.1", discovery(default=f"{other.base}/api1/", api_roots=[f"{other.base}/api1/"])) as disc:
        with pytest.raises(UpstreamDataError, match="another origin") as exc:
            await pull_all(adapter(f"{disc.base}/taxii2/", bearer=bearer))
    assert disc.base in str(exc.value) and other.base in str(exc.value)
    assert other.received == []
    assert "authorization" in {k.lower() for k, _ in disc.received[0].headers}


async def test_first_api_root_on_another_origin_is_refused(other):
    """Without a ``default``, the first of ``api_roots`` is pinned the same way."""
    with serve("127.0.0.1", discovery(api_roots=[f"//{other.base.removeprefix('http://')}/api1/"])) as disc:
        with pytest.raises(UpstreamDataError, match="allow_api_roots_at"):
            await pull_all(adapter(f"{disc.base}/taxii2/"))
    assert other.received == []


async def test_listed_origin_is_trusted_with_the_credentials(tmp_path):
    """An API root on an origin listed in allow_api_roots_at is used (with the credentials): the real server."""
    feed = Coll(FEED_ID, "feed", objects=[(INDICATOR, "2024-04-01T00:00:01.000000Z")])
    with medallion(tmp_path, {"api1": (1_000_000, [feed])}) as srv:
        doc = discovery(default=srv.api_root("api1"), api_roots=[srv.api_root("api1")])
        with serve("127.0.0.2", doc) as disc:
            batches = await pull_all(adapter(f"{disc.base}/taxii2/", allow_api_roots_at=[srv.base]))
    assert [s.value for b in batches for s in b.sightings] == ["pinned.example"]


async def test_same_origin_relative_api_root_is_used(tmp_path):
    """A relative API root in the discovery document resolves on the discovery origin and is used."""
    feed = Coll(FEED_ID, "feed", objects=[(INDICATOR, "2024-04-01T00:00:01.000000Z")])
    with medallion(tmp_path, {"api1": (1_000_000, [feed])}) as srv:
        a = adapter(srv.api_root("api1"))
        batches = await pull_all(a)
    assert len([s for b in batches for s in b.sightings]) == 1


def test_allow_api_roots_at_takes_origins_only():
    """allow_api_roots_at entries must be bare origins (no path, query or credentials)."""
    with pytest.raises(Exception, match="origin"):
        decode_options(
            {"url": "https://taxii.example/taxii2/", "allow_api_roots_at": ["https://x.example/api1/"]}, TaxiiConfig
        )


async def test_collection_id_stays_under_the_api_root():
    """A collection id with ``/`` or ``..`` is one path segment under the API root, not a way out of it."""
    evil = "../../../steal"

    def handle(req: Received):
        if req.target == "/api1/":
            return 200, {"Content-Type": MEDIA_TYPE}, b'{"title": "root"}'
        if req.target == "/api1/collections/":
            body = {"collections": [{"id": evil, "title": "feed", "can_read": True, "can_write": False}]}
            return 200, {"Content-Type": MEDIA_TYPE}, json.dumps(body).encode()
        return 200, {"Content-Type": MEDIA_TYPE}, b'{"more": false, "objects": []}'

    with serve("127.0.0.1", handle) as root:
        await pull_all(adapter(f"{root.base}/api1/"))
    last = root.received[-1].target
    assert last.startswith("/api1/collections/..%2F..%2F..%2Fsteal/objects/"), last
