"""The taxii adapter against a real TAXII 2.1 server (OASIS medallion) and, for corner cases, MockTransport."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from stix2validator import ValidationOptions, validate_instance
from taxii2client.v21 import Collection, as_pages

from ctd.adapters.taxii.adapter import MEDIA_TYPE, PublishParams, TaxiiAdapter, TaxiiConfig
from ctd.adapters.taxii.api import client_settings
from ctd.adapters.taxii.stix import build_pattern, indicator_id
from ctd.config import parse_config
from ctd.errors import AuthError, UpstreamDataError
from ctd.model import PullContext, ShareItem, Sighting, now
from ctd.plugins import open_adapter
from ctd.sharing.actor import Sharer
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.configutil import decode_options
from tests.fakestore import FakeStore
from tests.medallion_server import PASSWORD, USER, Coll, medallion
from tests.storeutil import ingest, show

FEED = json.loads((Path(__file__).parent / "fixtures" / "taxii" / "feed.json").read_text())
FEED_INDICATORS = [o for o in FEED if o["type"] == "indicator"]


def added(i: int) -> str:
    return f"2024-04-01T00:00:{i:02d}.000000Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One medallion for the module; each test writes to its own collection."""
    feed = Coll("c0f1e2d3-0000-4000-8000-000000000001", "feed", objects=[(o, added(i)) for i, o in enumerate(FEED)])
    writable = [
        Coll(f"c0f1e2d3-0000-4000-8000-00000000010{i}", title, can_write=True)
        for i, title in enumerate(["ctd-out", "ctd-retract", "incremental", "ctd-reshare", "shared"])
    ]
    small = [Coll("c0f1e2d3-0000-4000-8000-000000000201", "small-out", can_write=True)]
    roots = {"api1": (1_000_000, [feed, *writable]), "small": (1500, small)}
    with medallion(tmp_path_factory.mktemp("medallion"), roots) as srv:
        yield srv


@asynccontextmanager
async def taxii(url: str, collection: str = "", **kw):
    cfg = decode_options(
        {"url": url, "collection": collection, "username": USER, "password": PASSWORD, **kw}, TaxiiConfig
    )
    adapter = TaxiiAdapter("taxii", cfg, None)
    try:
        yield adapter
    finally:
        await adapter.aclose()


def ctx(**kw) -> PullContext:
    return PullContext(since=0, now=now(), **kw)


async def pull_all(adapter, context=None):
    return [b async for b in adapter.pull(context or ctx())]


def item(type_: str, value: str, **kw) -> ShareItem:
    base: dict[str, Any] = dict(
        severity="high",
        reputation=8,
        tags=("ctd-test",),
        comments="shared by ctd",
        reference="",
        first_seen=now() - 3600,
        last_seen=now(),
        expires_at=now() + 86400,
        sources=("edr",),
    )
    base.update(kw)
    return ShareItem(type=type_, value=value, **base)


ITEMS = [
    item("url", "http://evil.example/path?q=it's"),
    item("domain", "evil.example"),
    item("ipv4", "192.0.2.10"),
    item("cidr6", "2001:db8:1::/48"),
    item("email", "x@evil.example"),
    item("sha256", "a" * 64),
]


def client_collection(srv, coll_id: str, root: str = "api1") -> Collection:
    return Collection(f"{srv.api_root(root)}collections/{coll_id}/", user=USER, password=PASSWORD)


async def read_all(coll: Collection) -> list[dict]:
    """Every object of a collection, page by page, through the OASIS client (a thread: it is synchronous)."""

    def read() -> list[dict]:
        return [o for env in as_pages(coll.get_objects, per_request=5) for o in env.get("objects", [])]

    return await trio.to_thread.run_sync(read)


def values(batches) -> set[tuple[str, str]]:
    return {(s.type, s.value) for b in batches for s in b.sightings}


class TestPull:
    async def test_discovery_url_and_collection_title(self, server):
        """From the discovery URL, the default API root and the collection (by title) are found."""
        async with taxii(server.discovery, "feed") as a:
            report = await a.check()
        assert "'feed'" in report and "read" in report and server.api_root() in report

    async def test_pagination_over_several_pages(self, server):
        """A collection larger than the server's page size is read page by page, following `next`."""
        async with taxii(server.discovery, "feed", page_size=100) as a:
            batches = await pull_all(a)
        assert len(batches) == 4  # 17 indicators, max_page_size 5
        assert len(values(batches)) == 13
        assert sum(len(b.rejected) for b in batches) == 7  # unsupported and malformed, counted
        assert batches[-1].cursor == {"added_after": added(16)}  # the server's date, not object timestamps

    async def test_resume_mid_pagination(self, server):
        """A half-done pull resumes from its sub-checkpoint: only objects added after it."""
        async with taxii(server.api_root(), "c0f1e2d3-0000-4000-8000-000000000001") as a:
            batches = await pull_all(a, ctx(sub_checkpoint={"added_after": added(14)}))
        assert values(batches) == {("url", "http://revoked.example/"), ("domain", "expired.example")}
        assert all(s.retracted for b in batches for s in b.sightings)

    async def test_second_pull_gets_only_new_objects(self, server):
        """The cursor (X-TAXII-Date-Added-Last) makes the next pull incremental."""
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000102")
        first = [
            dict(o, id=f"indicator--0a000000-0000-4000-8000-00000000000{i}") for i, o in enumerate(FEED_INDICATORS[:3])
        ]
        later = [
            dict(o, id=f"indicator--0b000000-0000-4000-8000-00000000000{i}") for i, o in enumerate(FEED_INDICATORS[3:5])
        ]
        await trio.to_thread.run_sync(lambda: coll.add_objects({"objects": first}))
        async with taxii(server.discovery, "incremental") as a:
            batches = await pull_all(a)
            assert values(batches) == {
                ("url", "http://phish.example/login?a=1"),
                ("domain", "c2.example"),
                ("domain", "c2-backup.example"),
                ("cidr4", "198.51.100.0/24"),
            }
            cursor = batches[-1].cursor
            await trio.to_thread.run_sync(lambda: coll.add_objects({"objects": later}))
            again = await pull_all(a, ctx(cursor=cursor))
            assert values(again) == {("ipv4", "203.0.113.7"), ("ipv6", "2001:db8::1")}
            assert again[-1].cursor["added_after"] > cursor["added_after"]
            assert values(await pull_all(a, ctx(cursor=again[-1].cursor))) == set()

    async def test_wrong_password_is_auth_error(self, server):
        """401 from the server disables the plugin (AuthError)."""
        async with taxii(server.discovery, "feed", password="wrong") as a:
            with pytest.raises(AuthError):
                await pull_all(a)

    async def test_unknown_collection(self, server):
        """A collection no id or title matches is reported, not guessed."""
        async with taxii(server.discovery, "nope") as a:
            with pytest.raises(UpstreamDataError, match="no collection"):
                await pull_all(a)


class TestPush:
    async def test_push_then_pull_back(self, server):
        """IoCs published to a writable collection are read back by a second plugin, as valid STIX 2.1."""
        params = PublishParams(collection="ctd-out")
        async with taxii(server.discovery) as pub:
            assert (await pub.push("publish", params, ITEMS)).rejected == {}
        async with taxii(server.api_root(), "c0f1e2d3-0000-4000-8000-000000000100") as sub:
            batches = await pull_all(sub)
        got = {(s.type, s.value): s for b in batches for s in b.sightings}
        assert set(got) == {(i.type, i.value) for i in ITEMS}
        for s in got.values():
            assert (s.reputation, s.retracted, s.comments) == (8, False, "shared by ctd")
            assert "ctd-test" in s.tags and s.expires_at == ITEMS[0].expires_at
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000100")
        objects = await read_all(coll)
        assert len(objects) == len(ITEMS)
        for obj in objects:
            result = validate_instance(obj, ValidationOptions(version="2.1"))
            assert result.is_valid, [str(e) for e in result.errors]

    async def test_reshare_is_new_version_of_same_object(self, server):
        """Publishing the same IoC again adds a version to the same (deterministic) object id."""
        it = item("domain", "again.example")
        oid = indicator_id(build_pattern("domain", "again.example"))
        async with taxii(server.discovery) as pub:
            for _ in range(2):
                assert (await pub.push("publish", PublishParams(collection="ctd-reshare"), [it])).rejected == {}
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000103")
        versions = await trio.to_thread.run_sync(coll.object_versions, oid)
        assert len(versions["versions"]) == 2
        assert [o["id"] for o in await read_all(coll)] == [oid]

    async def test_retraction_seen_by_taxii2_client(self, server):
        """A retraction publishes a revoked version that the OASIS client and ctd's own pull both see."""
        it = item("url", "http://gone.example/")
        params = PublishParams(collection="ctd-retract")
        async with taxii(server.discovery) as pub:
            await pub.push("publish", params, [it])
            assert (await pub.retract("publish", params, [it])).rejected == {}
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000101")
        latest = await trio.to_thread.run_sync(coll.get_object, indicator_id(build_pattern("url", it.value)))
        (obj,) = latest["objects"]
        assert obj["revoked"] is True
        async with taxii(server.discovery, "ctd-retract") as sub:
            (s,) = [s for b in await pull_all(sub) for s in b.sightings]
        assert s.value == it.value and s.retracted

    async def test_envelopes_fit_max_content_length(self, server):
        """A push larger than the API root's max_content_length goes out in several envelopes, all accepted."""
        items = [item("domain", f"host{i}.spread.example") for i in range(12)]
        posts = []
        async with taxii(server.api_root("small")) as pub:

            async def count(request: httpx.Request) -> None:
                if request.method == "POST":
                    posts.append(len(request.content))

            pub.client.event_hooks["request"].append(count)
            assert (await pub.push("publish", PublishParams(collection="small-out"), items)).rejected == {}
        assert len(posts) > 1 and max(posts) <= 1500
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000201", root="small")
        assert len(await read_all(coll)) == 12

    async def test_read_only_collection_refuses_push(self, server):
        """Publishing into a collection we cannot write is an AuthError before anything is sent."""
        async with taxii(server.discovery) as pub:
            with pytest.raises(AuthError):
                await pub.push("publish", PublishParams(collection="feed"), ITEMS[:1])


class TestWithCtd:
    """The adapter as the daemon runs it: built from a config file, driven by a pull cycle and a sharing pass."""

    CONFIG = """
[plugins.intel]
adapter = "taxii"
url = "{discovery}"
collection = "feed"
username = "{user}"
password = "{password}"
page_size = 5
initial_range = "3650d"
[plugins.edr]
adapter = "file"
pull = false
[plugins.out]
adapter = "taxii"
pull = false
url = "{discovery}"
username = "{user}"
password = "{password}"
[rules.all]
filter = "type = domain"
[sharing.to-taxii]
sources = ["edr"]
rule = "all"
destination = "out"
action = "publish"
params = {{ collection = "shared" }}
"""

    @pytest.fixture
    def setup(self, server, tmp_path):
        cfg = parse_config(self.CONFIG.format(discovery=server.discovery, user=USER, password=PASSWORD))
        store = FakeStore(str(tmp_path / "db"))
        yield cfg, store
        store.close()

    async def test_pull_cycle_counts_and_checkpoints(self, setup):
        """One pull cycle ingests the feed, counts what it could not map and stores the server date as cursor."""
        cfg, store = setup
        async with open_adapter("intel", cfg.plugins["intel"]) as adapter:
            res = await pull_once(
                "intel",
                cfg.plugins["intel"],
                adapter,
                store,
                AllowlistRef(),
                SourceStatus("intel", cfg.plugins["intel"]),
            )
        assert (res.invalid, res.unsupported, res.batches) == (4, 3, 4)
        assert res.new == 13
        assert show(store.conn, "url", "http://revoked.example/")["active"] is False
        assert show(store.conn, "url", "http://phish.example/login?a=1")["active"] is True  # valid_until 2099
        assert (await store.checkpoint("intel")).cursor == {"added_after": added(16)}

    async def test_sharing_pass_publishes(self, setup, server):
        """A sharing configuration with action `publish` delivers the rule's IoCs into the collection."""
        cfg, store = setup
        ingest(store.conn, "edr", [Sighting(type="domain", value=f"d{i}.shared.example") for i in range(3)], now=now())
        sh = cfg.sharing["to-taxii"]
        async with open_adapter("out", cfg.plugins["out"]) as adapter:
            res = await Sharer("to-taxii", sh, cfg.rules["all"], cfg.plugins["out"], adapter, store).share_once()
        assert (res.pushed, res.rejected) == (3, 0)
        coll = client_collection(server, "c0f1e2d3-0000-4000-8000-000000000104")
        assert sorted(o["name"] for o in await read_all(coll)) == [f"d{i}.shared.example" for i in range(3)]


# --- protocol corner cases medallion does not produce ------------------------------------------


def mock_adapter(handler, **kw) -> TaxiiAdapter:
    cfg = decode_options({"url": "https://taxii.test/api/", "collection": "c", **kw}, TaxiiConfig)
    headers, auth = client_settings(cfg)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=headers, auth=auth)
    return TaxiiAdapter("taxii", cfg, client)


def respond(body: dict, status: int = 200, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": MEDIA_TYPE, **(headers or {})})


ROOT = {"title": "api", "max_content_length": 100000}
COLLS = {"collections": [{"id": "c", "title": "t", "can_read": True, "can_write": True}]}


def ind(n: int, value: str) -> dict:
    return dict(
        FEED_INDICATORS[0],
        id=f"indicator--00000000-0000-4000-8000-{n:012d}",
        pattern=f"[domain-name:value = '{value}']",
    )


class TestProtocol:
    async def test_more_without_next_requeries_from_date_added_last(self):
        """`more` with no `next`: ask again with added_after = X-TAXII-Date-Added-Last."""
        seen = []

        async def handler(request: httpx.Request) -> httpx.Response:
            path, q = request.url.path, request.url.params
            if path == "/api/":
                return respond(ROOT)
            if path == "/api/collections/":
                return respond(COLLS)
            seen.append(q.get("added_after"))
            assert "next" not in q
            if q["added_after"] == "2024-01-01T00:00:00Z":
                return respond(
                    {"more": True, "objects": [ind(1, "a.example")]},
                    headers={"X-TAXII-Date-Added-Last": "2024-05-01T00:00:00.000Z"},
                )
            return respond(
                {"more": False, "objects": [ind(2, "b.example")]},
                headers={"X-TAXII-Date-Added-Last": "2024-05-02T00:00:00.000Z"},
            )

        a = mock_adapter(handler)
        batches = await pull_all(a, ctx(cursor={"added_after": "2024-01-01T00:00:00Z"}))
        assert seen == ["2024-01-01T00:00:00Z", "2024-05-01T00:00:00.000Z"]
        assert values(batches) == {("domain", "a.example"), ("domain", "b.example")}
        assert batches[-1].cursor == {"added_after": "2024-05-02T00:00:00.000Z"}

    async def test_expired_pagination_session_requeries(self):
        """A `next` the server no longer knows is replaced by a query from the last server date."""
        calls = []

        async def handler(request: httpx.Request) -> httpx.Response:
            path, q = request.url.path, request.url.params
            if path == "/api/":
                return respond(ROOT)
            if path == "/api/collections/":
                return respond(COLLS)
            calls.append((q.get("added_after"), q.get("next")))
            if "next" in q:
                return respond({"title": "bad next"}, status=400)
            if q["added_after"] == "2024-05-01T00:00:00.000Z":
                return respond(
                    {"objects": [ind(2, "b.example")]}, headers={"X-TAXII-Date-Added-Last": "2024-05-02T00:00:00.000Z"}
                )
            return respond(
                {"more": True, "next": "tok", "objects": [ind(1, "a.example")]},
                headers={"X-TAXII-Date-Added-Last": "2024-05-01T00:00:00.000Z"},
            )

        batches = await pull_all(mock_adapter(handler))
        assert calls[1:] == [(calls[0][0], "tok"), ("2024-05-01T00:00:00.000Z", None)]
        assert values(batches) == {("domain", "a.example"), ("domain", "b.example")}

    async def test_vanished_collection_is_resolved_again(self):
        """After a 404 on the objects endpoint the next pull looks the collection up again."""
        listings = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/api/":
                return respond(ROOT)
            if request.url.path == "/api/collections/":
                listings.append(1)
                return respond(COLLS)
            if len(listings) == 1:
                return respond({"title": "gone"}, status=404)
            return respond({"objects": [ind(1, "a.example")]})

        a = mock_adapter(handler)
        with pytest.raises(UpstreamDataError):
            await pull_all(a)
        assert values(await pull_all(a)) == {("domain", "a.example")} and len(listings) == 2

    async def test_bearer_token_and_media_type(self):
        """A token is sent as a bearer Authorization header, with the TAXII 2.1 media type."""

        async def handler(request: httpx.Request) -> httpx.Response:
            assert request.headers["Authorization"] == "Bearer s3cret"
            assert request.headers["Accept"] == MEDIA_TYPE
            return respond(ROOT if request.url.path == "/api/" else COLLS)

        assert "'t'" in await mock_adapter(handler, token="s3cret").check()

    async def test_pending_status_is_polled_and_failures_become_rejections(self, autojump_clock):
        """A pending status is re-read until complete; failed object ids reject their IoCs only."""
        bad = item("domain", "bad.example")
        bad_id = indicator_id(build_pattern("domain", bad.value))
        polls = []

        async def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.path
            if path == "/api/":
                return respond(ROOT)
            if path == "/api/collections/":
                return respond(COLLS)
            if request.method == "POST":
                assert request.headers["Content-Type"] == MEDIA_TYPE
                return respond({"id": "s1", "status": "pending", "pending_count": 2}, status=202)
            assert path == "/api/status/s1/"
            polls.append(trio.current_time())
            if len(polls) < 3:
                return respond({"id": "s1", "status": "pending"})
            return respond(
                {"id": "s1", "status": "complete", "failures": [{"id": bad_id, "version": "x", "message": "refused"}]}
            )

        res = await mock_adapter(handler).push(
            "publish", PublishParams(collection="c"), [item("domain", "ok.example"), bad]
        )
        assert res.rejected == {"bad.example": "refused"} and len(polls) == 3

    async def test_pending_status_polling_is_bounded(self, autojump_clock):
        """A status that never completes is polled a bounded number of times, then accepted."""
        polls = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/api/":
                return respond(ROOT)
            if request.url.path == "/api/collections/":
                return respond(COLLS)
            if request.method == "GET":
                polls.append(1)
            return respond({"id": "s1", "status": "pending"}, status=202 if request.method == "POST" else 200)

        res = await mock_adapter(handler).push("publish", PublishParams(collection="c"), [item("domain", "a.example")])
        assert res.rejected == {} and len(polls) == 10

    def test_config_checks(self):
        """token excludes username/password; username needs a password; the url must be http(s)."""
        for bad in ({"token": "t", "username": "u", "password": "p"}, {"username": "u"}, {"url": "ftp://x/"}):
            with pytest.raises(msgspec.ValidationError):
                decode_options({"url": "https://x/", **bad}, TaxiiConfig)
        with pytest.raises(ValueError):
            TaxiiAdapter.check_plugin(True, decode_options({"url": "https://x/"}, TaxiiConfig))
