"""The Prometheus endpoint: scraped with a real HTTP client, parsed with prometheus_client's parser (issue 13)."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ctd.config import parse_config
from ctd.errors import ConfigError
from ctd.service import metrics_server
from ctd.service.metrics_server import serve_metrics
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for

CONFIG = """
[daemon]
state_dir = "{dir}/var"
socket = "{dir}/ctd.sock"
metrics = "127.0.0.1:{port}"

[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"

[plugins.lists]
adapter = "file"
pull = false

[rules.all]
filter = "type = domain"

[sharing.out]
sources = ["osint"]
rule = "all"
destination = "lists"
action = "write"
params = {{ path = "{dir}/out.txt" }}
interval = "1h"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_daemon_serves_prometheus_metrics() -> None:
    """A scrape of the running daemon has per-source, per-sharing, store and indicator metrics that parse."""
    d = short_tmpdir()
    port = free_port()
    proc = DaemonProc(d, CONFIG.format(dir=d, port=port))
    try:
        (d / "osint.txt").write_text("evil.example\nbad.example\n")
        proc.start().wait_ready()
        url = f"http://127.0.0.1:{port}/metrics"

        def scraped() -> dict | None:
            try:
                r = httpx.get(url, timeout=5)
            except httpx.TransportError:
                return None
            got = samples(r.text)
            return got if got.get(("ctd_source_pulls_total", (("outcome", "ok"), ("source", "osint"))), 0) else None

        got = wait_for(scraped, "a scrape after the first pull")
        src = (("source", "osint"),)
        assert got[("ctd_source_indicators_total", (("outcome", "new"), *src))] == 2
        assert got[("ctd_source_rejected_total", (("reason", "invalid"), *src))] == 0
        assert got[("ctd_source_pull_duration_seconds_count", src)] == 1
        assert got[("ctd_source_last_success_timestamp_seconds", src)] > 1.7e9
        assert got[("ctd_indicators", (("state", "active"), ("type", "domain")))] == 2
        assert ("ctd_sharing_ledger_entries", (("sharing", "out"), ("state", "pending"))) in got
        assert ("ctd_sharing_indicators_total", (("outcome", "pushed"), ("sharing", "out"))) in got
        assert ("ctd_store_queue_depth", ()) in got and got[("ctd_store_requests_total", ())] > 0
        r = httpx.get(url, timeout=5)
        assert r.headers["content-type"].startswith("text/plain; version=")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
        assert httpx.post(url, timeout=5).status_code == 405
        assert proc.stop() == 0
    finally:
        proc.cleanup()


def test_metrics_address_is_validated() -> None:
    """A malformed [daemon] metrics address is a config error at $.daemon; unset means off."""
    assert parse_config("").daemon.metrics is None
    with pytest.raises(ConfigError, match=r"HOST:PORT.*\$\.daemon"):
        parse_config('[daemon]\nmetrics = "9464"\n')


async def test_endpoint_caps_connections_and_drops_idle_ones(autojump_clock, nursery, monkeypatch) -> None:
    """Over MAX_CONNECTIONS a connection is closed at once; one that sends nothing is dropped after the timeout."""
    monkeypatch.setattr(metrics_server, "MAX_CONNECTIONS", 2)

    async def render() -> tuple[bytes, str]:
        return b"x 1\n", "text/plain"

    _, port = await nursery.start(_serve_on_free_port, render)
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    await trio.sleep(0.1)
    third = await trio.open_tcp_stream("127.0.0.1", port)
    assert await third.receive_some(10) == b""  # over the cap: closed without a word
    await third.aclose()
    await trio.sleep(metrics_server.REQUEST_TIMEOUT + 1)
    for stream in idle:
        assert await stream.receive_some(10) == b""  # idle past the request timeout: dropped
        await stream.aclose()
    ok = await trio.open_tcp_stream("127.0.0.1", port)
    await ok.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while chunk := await ok.receive_some(4096):
        reply += chunk
    await ok.aclose()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"x 1\n")


async def _serve_on_free_port(render, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await serve_metrics(f"127.0.0.1:{free_port()}", render, task_status=task_status)


def test_documented_metrics_are_the_exposed_ones() -> None:
    """docs/operations.md (its table and alert rules) names exactly the metrics ctd/daemon/metrics.py exposes."""
    import re

    from tests.daemonproc import REPO

    code = set(re.findall(r'"(ctd_[a-z_]+)"', (REPO / "ctd" / "daemon" / "metrics.py").read_text()))
    page = (REPO / "docs" / "operations.md").read_text().split("### Prometheus", 1)[1].split("### Without", 1)[0]
    documented = {re.sub(r"_(total|count|sum|bucket)$", "", m) for m in re.findall(r"\b(ctd_[a-z_]+)", page)}
    assert documented == code, documented ^ code
