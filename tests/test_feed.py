"""The ``feed`` adapter over HTTP: conditional GET, gzip, limits, errors, snapshots, MISP feeds."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import tomli_w

from ctd.adapters.feed.adapter import FeedAdapter, describe_url
from ctd.adapters.feed.records import PARSER_VERSION as PARSER
from ctd.config import parse_config
from ctd.errors import AuthError, SourceUnavailable, UpstreamDataError
from ctd.model import Batch, PullContext
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.fakestore import FakeStore
from tests.test_feed_formats import NOW, feed_files, misp_event

FIXTURES = Path(__file__).parent / "fixtures" / "feed"
TEXT = b"198.51.100.1\n198.51.100.2\n198.51.100.3\n198.51.100.4\n198.51.100.5\n"
ETAG = '"v1"'
LAST_MODIFIED = "Fri, 27 Nov 2026 19:45:00 GMT"


class Chunks(httpx.AsyncByteStream):
    """A body delivered in small chunks, like a real socket (and not pre-read by httpx)."""

    def __init__(self, data: bytes, size: int = 16) -> None:
        self.data, self.size = data, size

    async def __aiter__(self):
        for i in range(0, len(self.data), self.size):
            yield self.data[i : i + self.size]


class FeedServer:
    """Serves files by path with ETag/Last-Modified and honours conditional requests."""

    def __init__(self, files: dict[str, bytes], etag: str | None = ETAG) -> None:
        self.files = files
        self.etag = etag
        self.requests: list[httpx.Request] = []
        self.override: Callable[[httpx.Request], httpx.Response | None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override and (resp := self.override(request)) is not None:
            return resp
        name = request.url.path.rsplit("/", 1)[1]
        if name not in self.files:
            return httpx.Response(404)
        headers = {"Last-Modified": LAST_MODIFIED}
        if self.etag and name in ("feed.txt", "manifest.json"):
            headers["ETag"] = self.etag
            if request.headers.get("if-none-match") == self.etag:
                return httpx.Response(304, headers=headers)
        return httpx.Response(200, stream=Chunks(self.files[name]), headers=headers)


def make(server: FeedServer, **keys: object) -> FeedAdapter:
    table = {"adapter": "feed", "url": "https://feeds.example/x/feed.txt", **keys}
    cfg = parse_config(tomli_w.dumps({"plugins": {"f": table}}))
    return FeedAdapter("f", cfg.plugins["f"].options, httpx.AsyncClient(transport=httpx.MockTransport(server)))


async def pull(a: FeedAdapter, cursor: dict | None = None, sub: dict | None = None, now: int = NOW) -> list[Batch]:
    return [b async for b in a.pull(PullContext(since=0, now=now, cursor=cursor, sub_checkpoint=sub))]


def values(batches: list[Batch]) -> list[str]:
    return [s.value for b in batches for s in b.sightings]


# --------------------------------------------------------------------------- conditional GET


async def test_full_fetch_stores_validators_only_in_the_last_batch():
    """A 200 yields batches; only the last has snapshot_end and the ETag/Last-Modified cursor."""
    batches = await pull(make(FeedServer({"feed.txt": TEXT}), batch_size=2))
    assert values(batches) == [f"198.51.100.{i}" for i in range(1, 6)]
    assert [b.snapshot_end for b in batches] == [False, False, True]
    assert [b.cursor for b in batches[:-1]] == [None, None]
    assert batches[-1].cursor == {"etag": ETAG, "last_modified": LAST_MODIFIED, "fetched_at": NOW, "parser": PARSER}


async def test_not_modified_yields_nothing_and_retracts_nothing():
    """With the cursor's validators the request is conditional; 304 yields no batch at all."""
    server = FeedServer({"feed.txt": TEXT})
    cursor = {"etag": ETAG, "last_modified": LAST_MODIFIED, "fetched_at": NOW - 60, "parser": PARSER}
    assert await pull(make(server), cursor=cursor) == []
    sent = server.requests[0].headers
    assert sent["if-none-match"] == ETAG and sent["if-modified-since"] == LAST_MODIFIED


async def test_refetch_after_forces_an_unconditional_fetch():
    """After refetch_after since the last full download the GET is unconditional (keeps last_seen fresh)."""
    server = FeedServer({"feed.txt": TEXT})
    cursor = {"etag": ETAG, "fetched_at": NOW - 7200, "parser": PARSER}
    batches = await pull(make(server, refetch_after="1h"), cursor=cursor)
    assert "if-none-match" not in server.requests[0].headers
    assert batches[-1].snapshot_end


async def test_snapshot_false_never_ends_a_snapshot():
    """``snapshot = false``: IoCs only age out, no batch has snapshot_end."""
    batches = await pull(make(FeedServer({"feed.txt": TEXT}), snapshot=False))
    assert not any(b.snapshot_end for b in batches) and batches[-1].cursor["etag"] == ETAG


async def test_resume_skips_committed_lines_and_fetches_unconditionally():
    """A resumed pull re-downloads without validators and skips lines already committed."""
    server = FeedServer({"feed.txt": TEXT})
    batches = await pull(make(server), cursor={"etag": ETAG, "fetched_at": NOW}, sub={"validator": ETAG, "pos": 3})
    assert "if-none-match" not in server.requests[0].headers
    assert values(batches) == ["198.51.100.4", "198.51.100.5"] and batches[-1].snapshot_end


async def test_resume_of_a_changed_feed_starts_over():
    """If the validator changed since the interrupted pull, nothing is skipped."""
    batches = await pull(make(FeedServer({"feed.txt": TEXT})), sub={"validator": '"old"', "pos": 3})
    assert len(values(batches)) == 5


# --------------------------------------------------------------------------- request and body


async def test_auth_key_and_extra_headers_are_sent():
    """``auth_key`` goes out as Auth-Key; ``headers`` are added; gzip is accepted."""
    server = FeedServer({"feed.txt": TEXT})
    await pull(make(server, auth_key="s3cret", headers={"X-Team": "soc"}))
    h = server.requests[0].headers
    assert h["auth-key"] == "s3cret" and h["x-team"] == "soc" and "gzip" in h["accept-encoding"]


async def test_content_encoding_gzip_is_decoded():
    """``Content-Encoding: gzip`` bodies are decoded."""
    server = FeedServer({})
    server.override = lambda r: httpx.Response(
        200, stream=Chunks(gzip.compress(TEXT)), headers={"Content-Encoding": "gzip"}
    )
    assert len(values(await pull(make(server)))) == 5


async def test_gz_file_is_decoded_even_inside_content_encoding():
    """A ``.gz`` file is gunzipped (also when the server gzips it again on the wire)."""
    server = FeedServer({"feed.txt.gz": gzip.compress(TEXT)})
    assert len(values(await pull(make(server, url="https://feeds.example/feed.txt.gz")))) == 5
    server.override = lambda r: httpx.Response(
        200, stream=Chunks(gzip.compress(gzip.compress(TEXT))), headers={"Content-Encoding": "gzip"}
    )
    assert len(values(await pull(make(server)))) == 5


async def test_truncated_gzip_raises_without_completing_the_snapshot():
    """A truncated gzip raises UpstreamDataError after the batches parsed so far; none ends a snapshot."""
    body = "".join(f"198.51.{i // 250}.{i % 250 + 1}\n" for i in range(2000)).encode()
    server = FeedServer({})
    server.override = lambda r: httpx.Response(
        200, stream=Chunks(gzip.compress(body)[:-200], 256), headers={"Content-Encoding": "gzip"}
    )
    got: list[Batch] = []
    with pytest.raises(UpstreamDataError, match="truncated gzip"):
        async for b in make(server, batch_size=100).pull(PullContext(since=0, now=NOW)):
            got.append(b)
    assert got and not any(b.snapshot_end or b.cursor for b in got)


# Stopping mid-body leaves httpx's own stream iterators to the garbage collector
# (Response.aiter_raw does not aclose them); the response itself is closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_max_bytes_is_enforced_while_streaming():
    """A body over max_bytes (on the wire or decoded: a gzip bomb) is an UpstreamDataError."""
    server = FeedServer({"feed.txt": TEXT})
    with pytest.raises(UpstreamDataError, match="larger than max_bytes"):
        await pull(make(server, max_bytes=40))
    server.override = lambda r: httpx.Response(
        200, stream=Chunks(gzip.compress(b"1" * 100_000)), headers={"Content-Encoding": "gzip"}
    )
    with pytest.raises(UpstreamDataError, match="decoded body is larger"):
        await pull(make(server, max_bytes=5000))


async def test_empty_body_is_an_error_not_an_empty_snapshot():
    """A zero-byte 200 is an UpstreamDataError (it would otherwise retract everything)."""
    with pytest.raises(UpstreamDataError, match="empty response"):
        await pull(make(FeedServer({"feed.txt": b""})))


HTML_503 = b"""<html>
<head><title>503 Service Temporarily Unavailable</title></head>
<body>
<center><h1>503 Service Temporarily Unavailable</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


async def test_a_body_of_only_bad_records_is_an_error():
    """An error page served as 200 (no value, every record rejected) fails the pull; its rejections are kept first."""
    a = make(FeedServer({"feed.txt": HTML_503}))
    got: list[Batch] = []
    with pytest.raises(
        UpstreamDataError,
        match=r"no indicator in the body \(3 records rejected, 4 lines or items that are not records\): not this feed",
    ):
        async for b in a.pull(PullContext(since=0, now=NOW)):
            got.append(b)
    (batch,) = got  # the rejections, without a resume point, validators or the end of a snapshot
    assert batch.sightings == [] and len(batch.rejected) == 3
    assert not batch.snapshot_end and batch.cursor is None and batch.sub_checkpoint is None


async def test_an_error_page_fails_ctd_run_once(tmp_path):
    """The whole pull fails (error, exit 1) when the body is an HTML page: not `ok new=0 invalid=N`."""
    store = FakeStore(str(tmp_path / "db"))
    cfg = parse_config(
        tomli_w.dumps({"plugins": {"f": {"adapter": "feed", "url": "https://feeds.example/x/feed.txt"}}})
    )
    plugin = cfg.plugins["f"]
    a = make(FeedServer({"feed.txt": HTML_503}))
    with pytest.raises(UpstreamDataError):
        await pull_once("f", plugin, a, store, AllowlistRef(), SourceStatus("f", plugin))
    assert len((await store.rejections("f"))["malformed"]) == 3
    store.close()


async def test_a_page_of_only_markup_is_an_error_too():
    """A body that is all HTML tags and no value is not an empty feed either."""
    with pytest.raises(UpstreamDataError, match="not records"):
        await pull(make(FeedServer({"feed.txt": b"<html>\n<body>\n</body>\n</html>\n"})))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (403, AuthError),
        (404, UpstreamDataError),
        (503, SourceUnavailable),
        (429, SourceUnavailable),
    ],
)
async def test_http_errors_map_to_ctd_errors(status, error):
    """HTTP failures become AuthError / UpstreamDataError / SourceUnavailable (with Retry-After)."""
    server = FeedServer({})
    server.override = lambda r: httpx.Response(status, headers={"Retry-After": "120"})
    with pytest.raises(error) as info:
        await pull(make(server, url="https://feeds.example/api/SECRETKEY/recent.csv?auth-key=k2"))
    assert "SECRETKEY" not in str(info.value) and "k2" not in str(info.value)
    if error is SourceUnavailable:
        assert info.value.retry_after == 120


async def test_network_error_is_source_unavailable():
    """A connection failure is SourceUnavailable (the actor retries with backoff)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    server = FeedServer({})
    server.override = refuse
    with pytest.raises(SourceUnavailable, match="connection refused"):
        await pull(make(server))


def test_describe_url_hides_query_and_inner_path():
    """Messages name the host and file, never the query or inner path (abuse.ch puts keys there)."""
    assert describe_url("https://h.example/v2/files/KEY/recent.csv?k=v") == "https://h.example/.../recent.csv"


async def test_check_reports_the_status():
    """``check`` GETs the feed and reports it."""
    assert "HTTP 200" in await make(FeedServer({"feed.txt": TEXT})).check()


# --------------------------------------------------------------------------- csv and json through HTTP


async def test_preset_feed_over_http():
    """A preset feed fetched over HTTP parses like the fixture (ThreatFox)."""
    server = FeedServer({"recent.csv": (FIXTURES / "threatfox.csv").read_bytes()})
    batches = await pull(make(server, url="https://feeds.example/recent.csv", preset="threatfox"))
    assert values(batches) == [
        "198.51.100.44",
        "c2.evil.example.net",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ]
    assert len(batches[-1].rejected) == 1 and batches[-1].snapshot_end


async def test_json_feed_in_batches_with_broken_json_as_error():
    """JSON feeds are batched by item; an undecodable document is an UpstreamDataError."""
    server = FeedServer({"items.json": (FIXTURES / "items.json").read_bytes(), "bad.json": b'{"data": ['})
    keys = {
        "url": "https://feeds.example/items.json",
        "format": "json",
        "json_path": "data.items",
        "value_field": "ioc",
        "type_field": "kind",
        "batch_size": 4,
    }
    batches = await pull(make(server, **keys))
    assert len(batches) == 2 and len(values(batches)) == 3 and batches[-1].snapshot_end
    with pytest.raises(UpstreamDataError, match="bad JSON"):
        await pull(make(server, **{**keys, "url": "https://feeds.example/bad.json"}))


# --------------------------------------------------------------------------- MISP feeds

UUID1 = "5f0c1c2e-0000-4000-8000-000000000001"
UUID2 = "5f0c1c2e-0000-4000-8000-000000000002"


def misp_server() -> FeedServer:
    e2 = misp_event(UUID2)
    e2.timestamp = 1_795_000_000
    return FeedServer(feed_files(misp_event(UUID1), e2), etag='"m1"')


async def test_misp_incremental_fetches_only_changed_events():
    """MISP (default incremental): manifest, then new or changed events; timestamps kept in the cursor."""
    server = misp_server()
    a = make(server, url="https://feeds.example/misp/", format="misp")
    batches = await pull(a)
    assert [r.url.path for r in server.requests] == [
        "/misp/manifest.json",
        f"/misp/{UUID2}.json",
        f"/misp/{UUID1}.json",
    ]
    last = batches[-1]
    assert not last.snapshot_end and last.cursor["etag"] == '"m1"'
    assert set(last.cursor["events"]) == {UUID1, UUID2}
    assert ("http://gone.example.net/x", True) in [(s.value, s.retracted) for s in last.sightings]
    # the manifest changed (new ETag), one event's timestamp too
    cursor = {**last.cursor, "events": {**last.cursor["events"], UUID2: 1}}
    server.etag, server.requests = '"m2"', []
    await pull(a, cursor=cursor)
    assert [r.url.path for r in server.requests] == ["/misp/manifest.json", f"/misp/{UUID2}.json"]
    server.requests = []
    assert await pull(a, cursor={**cursor, "etag": '"m2"'}) == []  # 304


async def test_misp_snapshot_fetches_all_events_and_a_missing_event_withholds_the_end():
    """MISP with snapshot: every event, snapshot_end; a 404 event is rejected and nothing is retracted."""
    server = misp_server()
    a = make(server, url="https://feeds.example/misp/manifest.json", format="misp", snapshot=True)
    batches = await pull(a, cursor={"events": {UUID1: NOV_27}})
    assert len(server.requests) == 3 and batches[-1].snapshot_end and "events" not in batches[-1].cursor
    del server.files[f"{UUID1}.json"]
    batches = await pull(a)
    last = batches[-1]
    assert not last.snapshot_end and last.cursor == {}
    assert [r.where for r in last.rejected if "404" in r.reason] == [f"event {UUID1}"]


NOV_27 = 1_795_808_400


async def test_misp_events_read_by_another_parser_version_are_read_again():
    """An upgrade that parses differently re-reads every event, even behind an unchanged manifest (no 304)."""
    server = misp_server()
    a = make(server, url="https://feeds.example/misp/", format="misp")
    done = (await pull(a))[-1].cursor
    assert done["parser"] == PARSER
    server.requests = []
    assert await pull(a, cursor=done) == []  # the same version: 304, nothing read
    server.requests = []
    old = {k: v for k, v in done.items() if k != "parser"}  # written before versions were kept
    batches = await pull(a, cursor=old)
    assert "if-none-match" not in server.requests[0].headers
    assert sorted(r.url.path for r in server.requests[1:]) == [f"/misp/{UUID1}.json", f"/misp/{UUID2}.json"]
    assert batches[-1].cursor["parser"] == PARSER and set(batches[-1].cursor["events"]) == {UUID1, UUID2}


async def test_a_plain_feed_from_another_parser_version_is_fetched_whole():
    """A text/csv/json feed whose cursor another parser version wrote is fetched unconditionally."""
    server = FeedServer({"feed.txt": TEXT})
    cursor = {"etag": ETAG, "last_modified": LAST_MODIFIED, "fetched_at": NOW - 60, "parser": PARSER - 1}
    batches = await pull(make(server), cursor=cursor)
    assert "if-none-match" not in server.requests[0].headers and len(values(batches)) == 5


# --------------------------------------------------------------------------- with the store


async def test_snapshot_semantics_with_the_store(tmp_path):
    """Values gone from the feed are retracted; a 304 and a truncated download retract nothing."""
    cfg = parse_config('[plugins.f]\nadapter = "feed"\nurl = "https://feeds.example/feed.txt"\n')
    plugin = cfg.plugins["f"]
    server = FeedServer({"feed.txt": b"198.51.100.1\n198.51.100.2\n"})
    a = FeedAdapter("f", plugin.options, httpx.AsyncClient(transport=httpx.MockTransport(server)))
    store = FakeStore(str(tmp_path / "db"))

    async def once() -> dict[str, int]:
        await pull_once("f", plugin, a, store, AllowlistRef(), SourceStatus("f", plugin))
        rows = store.conn.execute("SELECT i.value, s.retracted FROM sighting s JOIN indicator i ON i.id = s.iid")
        return dict(rows.fetchall())

    try:
        assert await once() == {"198.51.100.1": 0, "198.51.100.2": 0}
        assert await once() == {"198.51.100.1": 0, "198.51.100.2": 0}  # 304
        assert server.requests[-1].headers["if-none-match"] == ETAG
        server.files["feed.txt"], server.etag = b"198.51.100.2\n198.51.100.3\n", '"v2"'
        assert await once() == {"198.51.100.1": 1, "198.51.100.2": 0, "198.51.100.3": 0}
        server.override = lambda r: httpx.Response(
            200,
            stream=Chunks(gzip.compress(b"198.51.100.3\n")[:-4]),
            headers={"Content-Encoding": "gzip", "ETag": '"v3"'},
        )
        with pytest.raises(UpstreamDataError):
            await once()
        rows = store.conn.execute("SELECT i.value, s.retracted FROM sighting s JOIN indicator i ON i.id = s.iid")
        assert dict(rows.fetchall()) == {"198.51.100.1": 1, "198.51.100.2": 0, "198.51.100.3": 0}
    finally:
        store.close()
        await a.aclose()


def test_config_needs_a_url_and_reads_auth_key_from_a_file(tmp_path):
    """A pulling feed needs ``url``; ``auth_key_file`` supplies the secret."""
    from ctd.errors import ConfigError

    with pytest.raises(ConfigError, match="needs `url`"):
        parse_config('[plugins.f]\nadapter = "feed"\n')
    (tmp_path / "key").write_text("s3cret\n")
    cfg = parse_config(
        f'[plugins.f]\nadapter = "feed"\nurl = "https://h.example/x"\nauth_key_file = "{tmp_path}/key"\n'
    )
    options = cfg.plugins["f"].options
    assert options.auth_key == "s3cret" and options.effective_snapshot and options.effective_format == "text"
