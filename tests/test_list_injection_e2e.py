"""Issue 9 finding 1, end to end: hostile feed values never become extra lines of a list a firewall reads.

The real daemon (a subprocess) pulls three feeds over HTTP on 127.0.0.1 and shares every URL to an EDL
(fetched over HTTP) and to a text list file. The allowlist holds 10.0.0.0/8 and microsoft.com.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for

GOOD = ["http://good.example/json", "http://good.example/text", "http://good.example/csv"]
JSON_FEED = [
    {"value": GOOD[0]},
    {"value": "http://www.microsoft.com/allowed"},  # allow-listed: never shared
    {"value": "http://evil.example/a\n10.0.0.0/8"},
    {"value": "http://evil.example/b\r\n*.microsoft.com"},
    {"value": "http://x\ninjected.example@evil.example/"},
    {"value": "http://evil.example/c\u202810.0.0.0/8"},
    {"value": "http://evil.example/d\u2029*.microsoft.com"},
    {"value": "http://evil.example/e\u202e8/0.0.0.01"},
    {"value": "http://evil.example/" + "a" * 10_000},
]
TEXT_FEED = (
    f"{GOOD[1]}\n"
    "http://evil.example/f\r10.0.0.0/8\n"
    "http://evil.example/g\x0010.0.0.0/8\n"
    "http://evil.example/h\x1b[2J*.microsoft.com\n"
    "http://evil.example/i\x8510.0.0.0/8\n"
).encode()
CSV_FEED = f'value\n{GOOD[2]}\n"http://evil.example/j\u202810.0.0.0/8"\n'.encode()
HOSTILE = len(JSON_FEED) - 2 + 4 + 1


@contextlib.contextmanager
def serve_feeds(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` by name over HTTP on 127.0.0.1; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(base: str, port: int) -> str:
    feeds = "".join(
        f'[plugins.{name}]\nadapter = "feed"\nurl = "{base}/{file}"\nformat = "{fmt}"\nsync_interval = "1h"\n'
        for name, file, fmt in (("fj", "feed.json", "json"), ("ft", "feed.txt", "text"), ("fc", "feed.csv", "csv"))
    )
    return (
        feeds
        + f"""
[allowlist]
cidrs = ["10.0.0.0/8"]
domains = ["microsoft.com"]
[plugins.fw]
adapter = "edl"
pull = false
bind = "127.0.0.1:{port}"
[plugins.out]
adapter = "file"
pull = false
[rules.urls]
filter = "type = url"
[sharing.edl]
sources = ["fj", "ft", "fc"]
rule = "urls"
destination = "fw"
action = "list"
params = {{ name = "urls" }}
[sharing.file]
sources = ["fj", "ft", "fc"]
rule = "urls"
destination = "out"
action = "write"
params = {{ path = "out.txt" }}
"""
    )


def test_hostile_feed_values_never_become_list_lines():
    """Feed values with injected line breaks are rejected; EDL and list file hold one line per good indicator."""
    port = free_port()
    files = {"feed.json": json.dumps(JSON_FEED).encode(), "feed.txt": TEXT_FEED, "feed.csv": CSV_FEED}
    d = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        with serve_feeds(files) as base:
            d.write_config(config(base, port))
            d.start().wait_ready()
            pulls = wait_for(lambda: pulls_done(d), "the three feeds to be pulled")
            wanted = sorted(GOOD)
            with httpx.Client(trust_env=False) as client:
                served = wait_for(lambda: edl_lines(client, port, wanted), "the EDL to hold the good URLs")
            out = d.dir / "out.txt"
            wanted_bytes = [g.encode() for g in wanted]
            wait_for(
                lambda: out.exists() and sorted(out.read_bytes().split(b"\n")[:-1]) == wanted_bytes,
                "the list file to hold the good URLs",
            )
            assert d.stop() == 0
        raw = out.read_bytes()
        assert raw.count(b"\n") == len(GOOD) and raw.decode().splitlines() == raw.decode().split("\n")[:-1]
        assert served == wanted
        for line in (*served, *raw.decode().split("\n")):
            assert "10.0.0.0/8" not in line and "microsoft.com" not in line and "injected" not in line
        assert sum(p["invalid"] for p in pulls.values()) == HOSTILE
    finally:
        d.cleanup()


def pulls_done(d: DaemonProc) -> dict[str, dict] | None:
    done = {e["ctd_source"]: e for e in d.logs() if e.get("ctd_event") == "source_pull_completed"}
    return done if len(done) == 3 else None


def edl_lines(client: httpx.Client, port: int, wanted: list[str]) -> list[str] | None:
    r = client.get(f"http://127.0.0.1:{port}/edl/urls.txt")
    if r.status_code != 200:
        return None
    lines = r.content.decode().split("\n")
    assert lines[-1] == "", r.content
    got = sorted(lines[:-1])
    # Before the fix the list carried the injected lines: fail on them at once, not by timing out.
    assert all(line in wanted for line in got), f"unexpected lines in the served list: {[x[:80] for x in got]!r}"
    return got if got == wanted else None
