"""Hostile bodies: JSON nested deeper than any parser's stack is a data error, never a crash.

Both stdlib ``json`` and msgspec raise ``RecursionError`` on a body like
``[[[[...]]]]`` 100,000 levels deep. Every adapter turns that into
``UpstreamDataError`` at its parse boundary (skip the batch, keep the
checkpoint, back off), so the source actor never reports "crashed".
Bodies come from real servers on loopback.
"""

from __future__ import annotations

import json

import pytest

from ctd.adapters.taxii.adapter import MEDIA_TYPE
from ctd.adapters.taxii.mapping import map_objects
from ctd.config import parse_config
from ctd.errors import UpstreamDataError
from ctd.model import PullContext
from ctd.plugins import open_adapter
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.loopback import Received, ok, serve

DEPTH = 100_000
NESTED = b"[" * DEPTH + b"]" * DEPTH
CTX = PullContext(since=0, now=1_800_000_000)


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


def nested_json(req: Received):
    return 200, {"Content-Type": "application/json"}, NESTED


async def pull_all(toml: str, name: str):
    cfg = parse_config(toml)
    async with open_adapter(name, cfg.plugins[name]) as adapter:
        return [b async for b in adapter.pull(CTX)]


async def test_feed_json_nested_too_deep():
    """A JSON feed nested 100,000 deep fails the pull with UpstreamDataError."""
    with serve("127.0.0.1", nested_json) as srv:
        with pytest.raises(UpstreamDataError, match="nested (too deeply|deeper than)"):
            await pull_all(f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/f.json"\nformat = "json"\n', "f")


async def test_misp_feed_manifest_nested_too_deep():
    """A MISP feed manifest nested too deep fails the pull with UpstreamDataError."""
    body = b'{"u": {"x": ' + NESTED + b"}}"
    with serve("127.0.0.1", ok(body, "application/json")) as srv:
        with pytest.raises(UpstreamDataError, match="nested too deeply"):
            await pull_all(f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/"\nformat = "misp"\n', "f")


async def test_misp_feed_event_nested_too_deep_is_a_rejected_event():
    """One MISP feed event nested too deep is counted as rejected; the pull itself goes on."""
    manifest = json.dumps({"5f0c0000-0000-4000-8000-000000000001": {"timestamp": 1, "info": "x"}}).encode()

    def handle(req: Received):
        if req.target.endswith("manifest.json"):
            return 200, {"Content-Type": "application/json"}, manifest
        return 200, {"Content-Type": "application/json"}, b'{"Event": {"x": ' + NESTED + b"}}"

    with serve("127.0.0.1", handle) as srv:
        batches = await pull_all(f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/"\nformat = "misp"\n', "f")
    rejected = [r for b in batches for r in b.rejected]
    assert len(rejected) == 1 and "nested" in rejected[0].reason and "deep" in rejected[0].reason


async def test_netskope_alerts_nested_too_deep():
    """Netskope data-export replies nested too deep are UpstreamDataError."""
    with serve("127.0.0.1", nested_json) as srv:
        toml = (
            f'[tenants.t]\nurl = "{srv.base}"\ntoken = "tok"\n'
            '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\nalert_types = ["malsite"]\n'
        )
        with pytest.raises(UpstreamDataError, match="nested too deeply"):
            await pull_all(toml, "ns")


async def test_misp_rest_search_nested_too_deep():
    """A MISP restSearch reply nested too deep is UpstreamDataError."""
    with serve("127.0.0.1", nested_json) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{"k" * 40}"\n'
        with pytest.raises(UpstreamDataError, match="nested too deeply"):
            await pull_all(toml, "m")


async def test_crowdstrike_token_reply_nested_too_deep():
    """A CrowdStrike reply nested too deep is UpstreamDataError."""
    with serve("127.0.0.1", nested_json) as srv:
        toml = f'[plugins.cs]\nadapter = "crowdstrike"\nclient_id = "c"\nclient_secret = "s"\nbase_url = "{srv.base}"\n'
        with pytest.raises(UpstreamDataError, match="nested too deeply"):
            await pull_all(toml, "cs")


async def test_taxii_reply_nested_too_deep():
    """A TAXII reply nested too deep is UpstreamDataError."""

    def handle(req: Received):
        return 200, {"Content-Type": MEDIA_TYPE}, NESTED

    with serve("127.0.0.1", handle) as srv:
        toml = f'[plugins.t]\nadapter = "taxii"\nurl = "{srv.base}/api1/"\ncollection = "c"\n'
        with pytest.raises(UpstreamDataError, match="nested too deeply"):
            await pull_all(toml, "t")


def test_stix_pattern_nested_too_deep_is_one_malformed_indicator():
    """A STIX pattern nested thousands deep rejects that indicator as malformed; the others map."""
    deep = "(" * 5000 + "[domain-name:value = 'deep.example']" + ")" * 5000
    objs = [
        {"type": "indicator", "id": "indicator--1", "pattern": deep, "pattern_type": "stix"},
        {
            "type": "indicator",
            "id": "indicator--2",
            "pattern": "[domain-name:value = 'fine.example']",
            "pattern_type": "stix",
        },
    ]
    sightings, rejected = map_objects(objs, 1_800_000_000)
    assert [s.value for s in sightings] == ["fine.example"]
    assert [r.where for r in rejected] == ["indicator--1"] and "nested too deeply" in rejected[0].reason


def test_daemon_reports_a_nested_body_as_a_data_error_not_a_crash():
    """The real daemon: a nested JSON feed is a failed pull with a clear error; no crash traceback is logged."""
    with serve("127.0.0.1", nested_json) as srv:
        d = DaemonProc(
            short_tmpdir(),
            f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/f.json"\nformat = "json"\nsync_interval = "1h"\n',
        )
        try:
            d.start().wait_ready()
            res = json.loads(d.ctl("--json", "sync", "f").stdout)
            assert "nested too deeply" in (res["error"] or ""), res
            assert d.stop() == 0
            events = [e for e in d.logs() if e.get("ctd_event") == "source_pull_failed"]
            assert events and all(e.get("error_type") == "UpstreamDataError" for e in events), events
            assert "source pull crashed" not in d.log.read_text()
        finally:
            d.cleanup()
