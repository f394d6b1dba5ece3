"""JSON feeds parsed while they stream: the incremental parser, its caps, the adapter's batching,
and the real daemon's memory on a gzip bomb."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from ctd.adapters.feed import formats as ff
from ctd.adapters.feed.stream import MAX_DEPTH, MAX_ITEM
from ctd.errors import UpstreamDataError
from ctd.model import Batch, PullContext
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.feedbomb import gzip_repeat, json_bomb, serve_gzip, vm_hwm, watch
from tests.test_feed import LAST_MODIFIED, Chunks, FeedServer, make, pull, values
from tests.test_feed_formats import NOW, spec

FIXTURE = (Path(__file__).parent / "fixtures" / "feed" / "items.json").read_bytes()


def bytewise(data: bytes, **keys: object) -> list:
    """The items of ``data`` fed one byte at a time."""
    stream = ff.JsonStream(spec(format="json", **keys))
    items = [item for i in range(len(data)) for item in stream.feed(data[i : i + 1])]
    return items + stream.finish()


# --------------------------------------------------------------------------- the parser


def test_the_c_parser_backend_is_in_use():
    """ijson runs on its yajl2 C backend (from its wheel), not the ~20x slower pure-Python fallback."""
    from ctd.adapters.feed.stream import BACKEND

    assert BACKEND == "yajl2_c"


def test_items_come_out_as_the_bytes_arrive():
    """Each item is handed out once its bytes are fed, before the document ends."""
    stream = ff.JsonStream(spec(format="json", json_path="data"))
    assert stream.feed(b'{"data": ["a.example", {"v": 1') == ["a.example"]
    assert stream.feed(b'}, "b.exa') == [{"v": 1}]
    assert stream.feed(b'mple"]}') == ["b.example"]
    assert stream.finish() == []


def test_any_split_gives_the_items_of_the_whole_document():
    """Fed a byte at a time, the fixture gives the same items as decoding it whole."""
    whole = json.loads(FIXTURE)["data"]["items"]
    assert bytewise(FIXTURE, json_path="data.items") == whole
    assert ff.json_items(FIXTURE, spec(format="json", json_path="data.items")) == whole


def test_siblings_of_the_path_are_skipped():
    """Keys beside json_path, before or after it and however nested, are skipped unbuilt."""
    doc = b'{"meta": {"items": [1], "x": [[{"data": 2}]]}, "data": {"n": 1, "items": ["v"], "z": {}}, "t": [3]}'
    assert bytewise(doc, json_path="data.items") == ["v"]


def test_top_level_object_values_are_the_items():
    """Without json_path a top-level object's values are the items (ThreatFox's export keyed by id)."""
    assert bytewise(b'{"1": [{"ioc": "a"}], "2": "b.example", "3": 4.5}') == [[{"ioc": "a"}], "b.example", 4.5]


def test_numbers_decode_as_json_numbers():
    """Numbers come out as int and float (as a whole-document decode gives them), never Decimal."""
    items = bytewise(b'[1, 2.5, -0.0, 1e3, {"s": 80}]')
    assert items == [1, 2.5, -0.0, 1000.0, {"s": 80}] and type(items[1]) is float


@pytest.mark.parametrize(
    "doc, path, message",
    [
        (b'{"data": 5}', "data.items", "no key 'data.items'"),
        (b'{"data": {"x": 1}}', "data.items", "no key 'data.items'"),
        (b"[1, 2]", "data", "no key 'data'"),
        (b'{"data": {"items": 1}}', "data", "json_path 'data' is not a list"),
        (b'"text"', "", r"'\(document\)' is not a list"),
        (b'{"data": [1, 2]} x', "data", "bad JSON"),
        (b'{"data": [1, 2]', "data", "bad JSON"),
        (b'{"nope": 1, "data": [', "data.items", "bad JSON"),  # undecodable wins over a wrong path
        (b"", "", "bad JSON"),
    ],
)
def test_documents_that_do_not_fit_are_format_errors(doc, path, message):
    """A missing key, a non-list at the path, or undecodable JSON fails the document."""
    with pytest.raises(ff.FormatError, match=message):
        bytewise(doc, json_path=path)


def test_an_oversized_item_fails_before_it_is_read_whole():
    """An item over MAX_ITEM (many small tokens) fails while streaming, after the items before it."""
    stream = ff.JsonStream(spec(format="json"))
    assert stream.feed(b'["a.example", [') == ["a.example"]
    with pytest.raises(ff.FormatError, match="larger than"):
        for _ in range(2 * MAX_ITEM // 4096):
            stream.feed(b'"x",' * 1024)


def test_an_oversized_token_fails_while_streaming():
    """One string longer than MAX_ITEM fails as it streams: the parser would buffer it whole."""
    stream = ff.JsonStream(spec(format="json"))
    stream.feed(b'["')
    with pytest.raises(ff.FormatError, match="longer than"):
        for _ in range(MAX_ITEM // 65536 + 2):
            stream.feed(b"a" * 65536)


def test_deep_nesting_fails():
    """Nesting deeper than MAX_DEPTH fails (in the path, an item or a skipped sibling alike)."""
    for doc in (b"[" * (MAX_DEPTH + 1), b'{"x": ' + b"[" * MAX_DEPTH):
        with pytest.raises(ff.FormatError, match="nested too deeply"):
            ff.JsonStream(spec(format="json", json_path="data")).feed(doc)


# --------------------------------------------------------------------------- the adapter

KEYS = {
    "url": "https://feeds.example/items.json",
    "format": "json",
    "json_path": "data.items",
    "value_field": "ioc",
    "type_field": "kind",
}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # see test_feed: stopping mid-body
async def test_batches_are_ingested_while_the_body_streams():
    """Batches come out while the body downloads: a body truncated later still yielded the items before."""
    body = b'["' + b'", "'.join(f"198.51.100.{i}".encode() for i in range(1, 101)) + b'", "198.51'
    server = FeedServer({})
    server.override = lambda r: httpx.Response(200, stream=Chunks(body, 64))
    got: list[Batch] = []
    with pytest.raises(UpstreamDataError, match="bad JSON"):
        async for b in make(server, url="https://feeds.example/x.json", format="json", batch_size=10).pull(
            PullContext(since=0, now=NOW)
        ):
            got.append(b)
    assert len(values(got)) == 100 and not any(b.snapshot_end or b.cursor for b in got)
    assert [b.sub_checkpoint["pos"] for b in got] == list(range(10, 101, 10))


async def test_resume_skips_committed_items_and_keeps_their_numbers():
    """A resumed pull of an unchanged JSON feed maps only the items after the committed position."""
    server = FeedServer({"items.json": FIXTURE})
    batches = await pull(make(server, **KEYS), sub={"validator": LAST_MODIFIED, "pos": 4})
    assert values(batches) == [] and [r.where for b in batches for r in b.rejected] == ["item 4", "item 5"]
    # The values before the resume point were committed in this snapshot: it ends here as usual.
    assert batches[-1].sub_checkpoint == {"done": True} and batches[-1].snapshot_end is True


async def test_batches_are_cut_by_bytes_too():
    """Big items make smaller batches: pending items never hold more than a batch's worth of bytes."""
    from ctd.adapters.feed.adapter import BATCH_BYTES

    big = "x" * (MAX_ITEM // 2)
    body = json.dumps([big] * (3 * BATCH_BYTES // len(big)) + ["198.51.100.1"]).encode()  # one value: a feed
    server = FeedServer({})
    server.override = lambda r: httpx.Response(200, stream=Chunks(body, 1 << 16))
    batches = await pull(make(server, url="https://feeds.example/x.json", format="json"))
    assert len(batches) >= 3 and all(len(b.rejected) <= BATCH_BYTES // len(big) + 2 for b in batches)


async def test_text_batches_are_cut_by_bytes_too():
    """The same byte bound holds for line formats: long lines make smaller batches."""
    from ctd.adapters.feed.adapter import BATCH_BYTES

    line = b"y" * (ff.MAX_LINE // 2) + b"\n"
    body = line * (3 * BATCH_BYTES // len(line)) + b"198.51.100.1\n"  # one value: a feed, not an error page
    server = FeedServer({})
    server.override = lambda r: httpx.Response(200, stream=Chunks(body, 1 << 16))
    batches = await pull(make(server))
    # (the first lines may be held back as a preamble until a value or MAX_PREAMBLE lines settle it)
    bound = BATCH_BYTES // len(line) + 2 + ff.MAX_PREAMBLE + 1
    assert len(batches) >= 3 and all(len(b.rejected) <= bound for b in batches)


# --------------------------------------------------------------------------- MISP event files

UUID = "5f0c1c2e-0000-4000-8000-0000000000b0"
IDS = b'{"type": "ip-dst", "value": "198.51.100.%d", "to_ids": true}'


def test_misp_attributes_that_cannot_count_are_dropped_as_they_stream():
    """A MISP event streams: attributes not for IDS or of an unmapped type are not kept while it is read."""
    from ctd.adapters.feed.misp import EventStream

    stream = EventStream()
    stream.feed(b'{"Event": {"uuid": "%s", "info": "x", "Attribute": [' % UUID.encode() + IDS % 1 + b",")
    for _ in range(100):
        stream.feed(b'{"type": "text", "value": "junk", "to_ids": true}, {"type": "ip-dst", "value": "198.51.100.9"},')
    stream.feed(IDS % 2 + b"]}}")
    assert [a.value for a in stream.kept] == ["198.51.100.1", "198.51.100.2"]
    (out, rejected), retracted = stream.finish(NOW, "ref")
    assert [s.value for s in out] == ["198.51.100.1", "198.51.100.2"] and not rejected and not retracted


@pytest.mark.parametrize(
    "doc",
    [
        b'{"Event": {"Attribute": [{"type": "ip-dst", "to_ids": "yes"}]}}',
        b'{"Event": {"Attribute": ["198.51.100.1"]}}',
        b'{"Event": {"Attribute": {"type": "ip-dst"}}}',
        b'{"Event": []}',
        b'{"event": {}}',
        b"[]",
        b'{"Event": {"uuid": 5}}',
    ],
)
def test_misp_files_that_are_not_events_fail(doc):
    """A file a typed decode of a MISP event would refuse is still a FormatError when streamed."""
    with pytest.raises(ff.FormatError, match="bad event JSON"):
        ff.misp_event(doc, NOW)


# --------------------------------------------------------------------------- the daemon

LIMIT = 300 * 10**6


def test_daemon_memory_stays_flat_on_a_json_gzip_bomb():
    """The real daemon pulls a 256 MiB JSON array (a 0.3 MiB gzip) with peak RSS under 300 MB, ingesting to the end.

    The strings are 253 bytes so the pull takes seconds (~1M items); bench/json_feed.py
    runs the 4-byte-item case (67M items), which only takes longer.
    """
    size = 256 << 20
    body = json_bomb(size, "198.51.100.1", "x" * 253, "198.51.100.2")
    d = DaemonProc(short_tmpdir(), "")
    try:
        with serve_gzip({"bomb.json": body}) as base:
            d.write_config(
                f'[plugins.bomb]\nadapter = "feed"\nurl = "{base}/bomb.json"\nformat = "json"\n'
                f'max_bytes = {size}\nsync_interval = "1h"\n'
            )
            d.start().wait_ready()
            assert d.proc is not None

            def finished() -> dict | None:
                return next(
                    (e for e in d.logs() if e.get("ctd_event") in ("source_pull_completed", "source_pull_failed")), None
                )

            event, peak = watch(d.proc.pid, finished, LIMIT, timeout=600)
            assert peak < LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
            assert event["ctd_event"] == "source_pull_completed", event
            assert event["new"] == 2 and event["invalid"] == (size - len('["198.51.100.1","198.51.100.2"]')) // 256
            assert d.ctl_rc("indicators", "show", "198.51.100.2") == 0
            assert vm_hwm(d.proc.pid) < LIMIT
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_daemon_memory_stays_flat_on_a_misp_event_bomb():
    """The real daemon pulls a MISP feed whose event file inflates to 256 MiB of attributes, under 300 MB peak RSS."""
    size = 256 << 20
    head = b'{"Event": {"uuid": "%s", "info": "bomb", "threat_level_id": "1", "Attribute": [' % UUID.encode()
    filler = b'{"type": "text", "value": "' + b"x" * 200 + b'", "to_ids": false},'
    event = gzip_repeat(size, head + IDS % 1 + b",", filler, IDS % 2 + b"]}}")
    manifest = gzip.compress(json.dumps({UUID: {"timestamp": 1_795_000_000, "info": "bomb"}}).encode())
    d = DaemonProc(short_tmpdir(), "")
    try:
        with serve_gzip({"manifest.json": manifest, f"{UUID}.json": event}) as base:
            d.write_config(
                f'[plugins.bomb]\nadapter = "feed"\nurl = "{base}/misp/"\nformat = "misp"\n'
                f'max_bytes = {size}\nsync_interval = "1h"\n'
            )
            d.start().wait_ready()
            assert d.proc is not None

            def finished() -> dict | None:
                return next(
                    (e for e in d.logs() if e.get("ctd_event") in ("source_pull_completed", "source_pull_failed")), None
                )

            event_log, peak = watch(d.proc.pid, finished, LIMIT, timeout=600)
            assert peak < LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
            assert event_log["ctd_event"] == "source_pull_completed" and event_log["new"] == 2, event_log
            assert d.ctl_rc("indicators", "show", "198.51.100.2") == 0
        assert d.stop() == 0
    finally:
        d.cleanup()
