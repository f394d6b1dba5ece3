"""The EDL server's limits from the plugin's config, its accept loop out of descriptors, and its
refusal log under a connection flood (rate-limited like the control socket's)."""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Iterator

import pytest
import structlog
import trio

from ctd.adapters.edl.adapter import EdlAdapter
from ctd.adapters.edl.server import ServerSettings, serve_edl
from ctd.config import parse_config
from ctd.errors import ConfigError
from tests.test_edl_limits import GET, connect, header, read_all, read_response

LINE = b"a.example\n"
NOT_A_LIST = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"


def plugin(keys: str) -> EdlAdapter:
    cfg = parse_config(f'[plugins.fw]\nadapter = "edl"\npull = false\nbind = "127.0.0.1:0"\nlists_dir = "/tmp"\n{keys}')
    return EdlAdapter("fw", cfg.plugins["fw"].options)


# --------------------------------------------------------------------------- settings from the config


def test_server_limits_come_from_the_plugin_config():
    """response_timeout, request/send timeouts, connection caps and retry_after reach the server's settings."""
    s = plugin(
        'request_timeout = "5s"\nsend_timeout = "20s"\nresponse_timeout = "2m"\n'
        "max_connections = 32\nmax_connections_per_client = 4\nretry_after = 30\n"
    ).settings()
    assert (s.request_timeout, s.send_timeout, s.response_timeout) == (5, 20, 120)
    assert (s.max_connections, s.max_connections_per_client, s.retry_after) == (32, 4, 30)


def test_server_limits_default_to_the_documented_values():
    """Without the keys the server runs with ServerSettings' defaults (10 s, 30 s, 300 s, 256, 16, 10)."""
    s = plugin("").settings()
    d = ServerSettings(host="h", port=0, lists_dir="/")
    got = (s.request_timeout, s.send_timeout, s.response_timeout, s.max_connections)
    assert got == (d.request_timeout, d.send_timeout, d.response_timeout, d.max_connections) == (10, 30, 300, 256)
    assert (s.max_connections_per_client, s.retry_after) == (d.max_connections_per_client, d.retry_after) == (16, 10)


@pytest.mark.parametrize(
    "keys, key",
    [
        ('request_timeout = "0s"', "request_timeout"),
        ('request_timeout = "10m"', "request_timeout"),
        ("send_timeout = 0", "send_timeout"),
        ('send_timeout = "2h"', "send_timeout"),
        ('response_timeout = "0.5s"', "response_timeout"),
        ('response_timeout = "2d"', "response_timeout"),
        ("max_connections = 0", "max_connections"),
        ("max_connections = 100000", "max_connections"),
        ("max_connections_per_client = 0", "max_connections_per_client"),
        ("max_connections = 8\nmax_connections_per_client = 9", "max_connections_per_client"),
        ("retry_after = 0", "retry_after"),
        ("retry_after = 86400", "retry_after"),
        ('retry_after = "10"', "retry_after"),
    ],
)
def test_server_limits_out_of_range_are_config_errors(keys, key):
    """Each limit is validated: zero, absurd values and wrong types are config errors naming the key."""
    with pytest.raises(ConfigError, match=key):
        plugin(keys)


async def test_configured_per_client_cap_and_retry_after_are_served(tmp_path):
    """The plugin's max_connections_per_client and retry_after decide who gets 503 and what Retry-After says."""
    (tmp_path / "urls.txt").write_bytes(LINE)
    cfg = parse_config(
        f'[plugins.fw]\nadapter = "edl"\npull = false\nbind = "127.0.0.1:0"\nlists_dir = "{tmp_path}"\n'
        "max_connections_per_client = 1\nretry_after = 42\n"
    )
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(EdlAdapter("fw", cfg.plugins["fw"].options).serve)
        first = await connect(addr)
        await first.send(GET)
        assert (await read_response(first)).startswith(b"HTTP/1.1 200 ")
        second = await connect(addr)
        await second.send(GET)
        refused = await read_all(second)
        first.close()
        second.close()
        nursery.cancel_scope.cancel()
    assert refused.startswith(b"HTTP/1.1 503 ") and header(refused, b"retry-after") == b"42"


# --------------------------------------------------------------------------- refusals under a flood


async def test_refusals_are_logged_once_a_minute_per_client(tmp_path, autojump_clock):
    """Connections refused over a cap log one warning per client IP a minute, the next counting those held back."""
    (tmp_path / "urls.txt").write_bytes(LINE)
    # A request timeout past the minute: the connections held open stay open meanwhile.
    s = ServerSettings(
        host="127.0.0.1", port=0, lists_dir=str(tmp_path), max_connections_per_client=1, request_timeout=600
    )
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_edl, s)
            # Served connections stay idle: serving a file runs a thread, which the autojump clock does not wait for.
            holder = await connect(addr)
            for _ in range(5):
                sock = await connect(addr)
                await sock.send(GET)
                assert (await read_all(sock)).startswith(b"HTTP/1.1 503 ")
                sock.close()
            other = await connect(addr, source="127.0.0.2")  # another client: its own line at once
            o2 = await connect(addr, source="127.0.0.2")
            await o2.send(GET)
            await read_all(o2)
            await trio.sleep(61)
            sock = await connect(addr)
            await sock.send(GET)
            await read_all(sock)
            for x in (holder, other, o2, sock):
                x.close()
            nursery.cancel_scope.cancel()
    refused = [e for e in logs if e.get("ctd_event") == "edl_overloaded"]
    assert [(e["client"], e["suppressed"]) for e in refused] == [("127.0.0.1", 0), ("127.0.0.2", 0), ("127.0.0.1", 4)]
    assert all(e["log_level"] == "warning" for e in refused)


# --------------------------------------------------------------------------- out of descriptors


@pytest.fixture
def few_descriptors() -> Iterator[list[int]]:
    """Lower this process's descriptor limit close to what it uses; yields a list to fill with dups."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 32, hard))
    filler: list[int] = []
    try:
        yield filler
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fill(filler: list[int]) -> None:
    """Use up every free descriptor."""
    while True:
        try:
            filler.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
            return


async def test_accept_emfile_backs_off_with_one_warning_and_recovers(
    tmp_path, autojump_clock, few_descriptors: list[int], caplog: pytest.LogCaptureFixture
):
    """Out of descriptors, EDL accept backs off with one warning (no traceback every 100 ms), then serves."""
    (tmp_path / "urls.txt").write_bytes(LINE)
    s = ServerSettings(host="127.0.0.1", port=0, lists_dir=str(tmp_path))
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_edl, s)
            client = trio.socket.socket()
            _fill(few_descriptors)
            await client.connect(addr)  # queued in the backlog: the server cannot accept it
            await trio.sleep(30)
            failed = [e for e in logs if e.get("ctd_event") == "edl_accept_failed"]
            assert [(e["log_level"], e["error"]) for e in failed] == [("warning", "EMFILE")]
            for fd in few_descriptors:
                os.close(fd)
            few_descriptors.clear()
            await client.send(NOT_A_LIST)  # answered without a thread, which the autojump clock would not wait for
            assert (await read_response(client)).startswith(b"HTTP/1.1 404 ")
            client.close()
            nursery.cancel_scope.cancel()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    recovered = [e for e in logs if e.get("ctd_event") == "edl_accept_recovered"]
    assert len(recovered) == 1 and recovered[0]["failures"] > 1
