"""Caps of the shared HTTP layer against hostile or broken servers, over real loopback sockets:
Retry-After bounded, response bodies bounded after decompression (gzip bombs), for every API adapter."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest
import structlog
import trio

from ctd.adapters.feed.misp import MAX_MANIFEST_EVENTS
from ctd.adapters.http import DEFAULT_MAX_RESPONSE, MAX_RETRY_AFTER
from ctd.adapters.taxii.api import MEDIA_TYPE
from ctd.config import parse_config
from ctd.errors import ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext
from ctd.plugins import open_adapter
from tests.daemonproc import REPO
from tests.feedbomb import gzip_repeat, vm_hwm
from tests.loopback import Received, ok, serve

CTX = PullContext(since=0, now=1_800_000_000)
MISP_KEY = "m" * 40


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


async def pull_all(toml: str, name: str) -> list:
    cfg = parse_config(toml)
    async with open_adapter(name, cfg.plugins[name]) as adapter:
        return [b async for b in adapter.pull(CTX)]


def too_busy(headers: dict[str, str]):
    def handle(req: Received):
        return 429, {"Content-Type": "application/json", **headers}, b"{}"

    return handle


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "99999999"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
)
async def test_a_huge_retry_after_is_capped_and_logged(headers):
    """A server's Retry-After far in the future is capped at MAX_RETRY_AFTER, and the cap is logged with the origin."""
    with serve("127.0.0.1", too_busy(headers)) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\n'
        with structlog.testing.capture_logs() as logs, pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "m")
    assert exc.value.retry_after == MAX_RETRY_AFTER == 3600
    capped = [e for e in logs if e.get("ctd_event") == "retry_after_capped"]
    assert len(capped) == 1 and capped[0]["origin"] == srv.base and capped[0]["log_level"] == "warning"
    assert capped[0]["requested_s"] > MAX_RETRY_AFTER and capped[0]["retry_after_s"] == MAX_RETRY_AFTER


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-5"])
async def test_a_vendor_retry_header_that_is_not_a_sane_number_is_bounded(value):
    """A vendor rate-limit header of inf, nan, 1e300 or a negative number gives a wait within [0, MAX_RETRY_AFTER]."""
    with serve("127.0.0.1", too_busy({"ratelimit-reset": value})) as srv:
        toml = (
            f'[tenants.t]\nurl = "{srv.base}"\ntoken = "tok"\n'
            '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\nalert_types = ["malsite"]\n'
        )
        with structlog.testing.capture_logs(), pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "ns")
    wait = exc.value.retry_after
    assert wait is None or 0 <= wait <= MAX_RETRY_AFTER


async def test_a_modest_retry_after_is_kept():
    """A Retry-After under the cap is passed on as given, and nothing is logged about it."""
    with serve("127.0.0.1", too_busy({"Retry-After": "120"})) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\n'
        with structlog.testing.capture_logs() as logs, pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "m")
    assert exc.value.retry_after == 120
    assert not [e for e in logs if e.get("ctd_event") == "retry_after_capped"]


# --------------------------------------------------------------------------- response size (gzip bombs)

BOMB_SIZE = 256 << 20  # decoded; ~0.25 MiB of gzip on the wire
CAP_ERROR = f"response larger than {DEFAULT_MAX_RESPONSE} bytes (max_response_bytes)"


def json_list_bomb(head: bytes, item: bytes, tail: bytes, size: int = BOMB_SIZE) -> bytes:
    """gzip of ``head``, ``item`` repeated (comma-separated), ``tail``: exactly ``size`` bytes of JSON inflated."""
    return gzip_repeat(size, head, item + b",", item + tail)


def gzipped(body: bytes, content_type: str = "application/json"):
    def handle(req: Received):
        return 200, {"Content-Type": content_type, "Content-Encoding": "gzip"}, body

    return handle


async def test_misp_reply_gzip_bomb_fails_the_pull_at_the_cap():
    """A MISP restSearch reply inflating to 256 MiB fails the pull at max_response_bytes (64 MiB by default)."""
    bomb = json_list_bomb(b'{"response": {"Attribute": [', b'{"type": "domain", "value": "x.example"}', b"]}}")
    with serve("127.0.0.1", gzipped(bomb)) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\n'
        with pytest.raises(UpstreamDataError, match=re.escape(CAP_ERROR)):
            await pull_all(toml, "m")


async def test_netskope_reply_gzip_bomb_fails_the_pull_at_the_cap():
    """A Netskope data-export page inflating to 256 MiB fails the pull at the cap."""
    bomb = json_list_bomb(b'{"ok": 1, "result": [', b'{"url": "http://x.example/"}', b"]}")
    with serve("127.0.0.1", gzipped(bomb)) as srv:
        toml = (
            f'[tenants.t]\nurl = "{srv.base}"\ntoken = "tok"\n'
            '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\nalert_types = ["malsite"]\n'
        )
        with pytest.raises(UpstreamDataError, match=re.escape(CAP_ERROR)):
            await pull_all(toml, "ns")


async def test_crowdstrike_reply_gzip_bomb_fails_the_pull_at_the_cap():
    """A CrowdStrike token reply inflating to 256 MiB fails the pull at the cap."""
    bomb = gzip_repeat(BOMB_SIZE, b'{"access_token": "', b"x" * 1024, b'"}')
    with serve("127.0.0.1", gzipped(bomb)) as srv:
        toml = f'[plugins.cs]\nadapter = "crowdstrike"\nclient_id = "c"\nclient_secret = "s"\nbase_url = "{srv.base}"\n'
        with pytest.raises(UpstreamDataError, match=re.escape(CAP_ERROR)):
            await pull_all(toml, "cs")


def taxii_server(objects_body: bytes, encoding: str = "gzip"):
    """A TAXII API root at /api1/ with collection "c" whose objects page is ``objects_body``."""
    root = json.dumps({"title": "r", "versions": ["application/taxii+json;version=2.1"]}).encode()
    colls = json.dumps({"collections": [{"id": "c", "title": "c", "can_read": True, "can_write": False}]}).encode()

    def handle(req: Received):
        path = req.target.split("?")[0]
        if path == "/api1/":
            return 200, {"Content-Type": MEDIA_TYPE}, root
        if path == "/api1/collections/":
            return 200, {"Content-Type": MEDIA_TYPE}, colls
        return 200, {"Content-Type": MEDIA_TYPE, "Content-Encoding": encoding}, objects_body

    return handle


TAXII_BOMB_ITEM = b'{"type": "malware", "id": "malware--00000000-0000-4000-8000-000000000000", "is_family": false}'


async def test_taxii_objects_gzip_bomb_fails_the_pull_at_the_cap():
    """A TAXII page inflating to 256 MiB is parsed as it streams and fails the pull at the cap."""
    bomb = json_list_bomb(b'{"more": false, "objects": [', TAXII_BOMB_ITEM, b"]}")
    with serve("127.0.0.1", taxii_server(bomb)) as srv:
        toml = f'[plugins.t]\nadapter = "taxii"\nurl = "{srv.base}/api1/"\ncollection = "c"\n'
        with pytest.raises(UpstreamDataError, match=re.escape(f"TAXII get objects: {CAP_ERROR}")):
            await pull_all(toml, "t")


async def test_taxii_page_streams_its_objects_and_reads_more_after_them():
    """A TAXII page's objects are mapped as they stream; `more` and `next` are read wherever they are."""
    ind = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "created": "2024-04-01T00:00:00.000Z",
        "modified": "2024-04-01T00:00:00.000Z",
        "pattern": "[domain-name:value = 'streamed.example']",
        "pattern_type": "stix",
        "valid_from": "2024-04-01T00:00:00Z",
    }
    page = json.dumps({"objects": [ind, {"type": "malware"}, 7], "more": False}).encode()
    with serve("127.0.0.1", taxii_server(gzip.compress(page))) as srv:
        toml = f'[plugins.t]\nadapter = "taxii"\nurl = "{srv.base}/api1/"\ncollection = "c"\n'
        batches = await pull_all(toml, "t")
    assert [s.value for b in batches for s in b.sightings] == ["streamed.example"]
    assert [r.where for b in batches for r in b.rejected] == ["object #2"]


async def test_max_response_bytes_is_a_plugin_key():
    """max_response_bytes sets the cap per plugin, for plain bodies too (on the wire)."""
    body = json.dumps({"response": {"Attribute": [{"type": "domain", "value": "x.example"}] * 200}}).encode()
    with serve("127.0.0.1", ok(body, "application/json")) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\nmax_response_bytes = 4096\n'
        with pytest.raises(UpstreamDataError, match=re.escape("response larger than 4096 bytes (max_response_bytes)")):
            await pull_all(toml, "m")


def test_max_response_bytes_is_validated():
    """max_response_bytes takes 1 KiB to 4 GiB (64 MiB by default); outside, a config error naming the key."""
    toml = '[plugins.m]\nadapter = "misp"\nurl = "http://x"\napi_key = "k"\n'
    assert parse_config(toml).plugins["m"].options.max_response_bytes == DEFAULT_MAX_RESPONSE == 64 << 20
    for value in (1024, 1 << 32):
        assert parse_config(f"{toml}max_response_bytes = {value}\n").plugins["m"].options.max_response_bytes == value
    for value in (0, 1023, 1 << 33):
        with pytest.raises(ConfigError, match="max_response_bytes"):
            parse_config(
                f'[plugins.m]\nadapter = "misp"\nurl = "http://x"\napi_key = "k"\nmax_response_bytes = {value}\n'
            )


# --------------------------------------------------------------------------- MISP feed manifest


async def test_misp_feed_manifest_with_too_many_events_is_refused():
    """A MISP feed manifest listing more than MAX_MANIFEST_EVENTS events fails the pull with a clear error."""
    n = MAX_MANIFEST_EVENTS + 1
    manifest = b"{" + b",".join(b'"%036d": {"timestamp": 1}' % i for i in range(n)) + b"}"
    with serve("127.0.0.1", gzipped(gzip.compress(manifest))) as srv:
        toml = f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/misp/"\nformat = "misp"\n'
        with pytest.raises(UpstreamDataError, match=f"manifest.json lists more than {MAX_MANIFEST_EVENTS} events"):
            await pull_all(toml, "f")


async def test_misp_feed_manifest_is_parsed_as_it_streams():
    """The manifest is read entry by entry: its events are fetched, an entry that is not an object fails it."""
    good = json.dumps({"5f0c0000-0000-4000-8000-000000000001": {"timestamp": 5, "info": "x"}}).encode()
    with serve("127.0.0.1", ok(good, "application/json")) as srv:
        toml = f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/misp/"\nformat = "misp"\n'
        batches = await pull_all(toml, "f")
        assert [r.where for b in batches for r in b.rejected] == ["event 5f0c0000-0000-4000-8000-000000000001"]
        assert srv.received[-1].target == "/misp/5f0c0000-0000-4000-8000-000000000001.json"
    with serve("127.0.0.1", ok(b'{"u": 5}', "application/json")) as srv:
        with pytest.raises(UpstreamDataError, match="bad manifest.json: event 'u': not an object"):
            await pull_all(f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/"\nformat = "misp"\n', "f")


# --------------------------------------------------------------------------- memory, measured in a child process

HWM_LIMIT = 250 * 10**6  # the child's peak RSS: the interpreter with ctd loaded is ~80 MB of it


def taxii_bomb_child(size: int, cap: int) -> None:
    """Run in a child process: pull a TAXII page inflating to ``size`` bytes with max_response_bytes ``cap``;
    print the error and the peak RSS (VmHWM) before and after, as JSON."""
    item = b'{"type": "malware", "is_family": false, "description": "' + b"x" * 4000 + b'"}'
    bomb = json_list_bomb(b'{"more": false, "objects": [', item, b"]}", size)
    with serve("127.0.0.1", taxii_server(bomb)) as srv:
        toml = (
            f'[plugins.t]\nadapter = "taxii"\nurl = "{srv.base}/api1/"\ncollection = "c"\nmax_response_bytes = {cap}\n'
        )
        before = vm_hwm(os.getpid())

        async def main() -> str:
            cfg = parse_config(toml)
            try:
                async with open_adapter("t", cfg.plugins["t"]) as adapter:
                    async for _batch in adapter.pull(CTX):
                        pass  # as the source actor does: each batch is committed and let go
            except UpstreamDataError as exc:
                return str(exc)
            return "no error"

        error = trio.run(main)
    print(json.dumps({"error": error, "before": before, "after": vm_hwm(os.getpid())}), flush=True)


def test_taxii_pull_memory_stays_flat_on_a_gzip_bomb():
    """A TAXII page inflating to 512 MiB, with max_response_bytes raised to 512 MiB, is parsed as it streams:
    the pull fails at the cap with the clear error and the process's peak RSS grows by a few MB, not 512."""
    size = cap = 512 << 20
    code = f"from tests.test_http_limits import taxii_bomb_child; taxii_bomb_child({size + 1024}, {cap})"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=out, env=env)
        peak = 0
        try:  # a child that leaks is stopped before it eats the machine
            while child.poll() is None and peak <= HWM_LIMIT:
                with contextlib.suppress(OSError, RuntimeError):  # it may exit between poll and read
                    peak = max(peak, vm_hwm(child.pid))
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
        assert peak <= HWM_LIMIT, f"peak RSS {peak / 1e6:.0f} MB, over {HWM_LIMIT / 1e6:.0f} MB"
        out.seek(0)
        result = json.loads(out.read())
    assert result["error"] == f"TAXII get objects: response larger than {cap} bytes (max_response_bytes)"
    assert result["after"] < HWM_LIMIT and result["after"] - result["before"] < 40 * 10**6, result
