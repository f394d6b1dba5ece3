"""End to end: the daemon as a real subprocess pulls RSS feeds over loopback and writes a list file.

Nothing a warning list flags reaches the destination; ``ctdctl`` shows the flag and counts it per source.
"""

from __future__ import annotations

import time
from typing import Any

from tests.daemonproc import DaemonProc, short_tmpdir
from tests.webcorpus import items
from tests.webserve import corpus_server

FEEDS = {i.name: i for i in items() if i.kind == "feed"}


def config(base: str) -> str:
    return f"""
[plugins.atom]
adapter = "rss"
url = "{base}/feed-atom/feed.xml"
initial_range = "3650d"

[plugins.rdf]
adapter = "rss"
url = "{base}/feed-rss10/feed.rdf"
initial_range = "3650d"

[plugins.out]
adapter = "file"
pull = false

[rules.everything]
filter = "type in (url, domain, hostname, ipv4, ipv6, cidr4, cidr6, md5, sha1, sha256, email)"

[sharing.file]
sources = ["atom", "rdf"]
rule = "everything"
destination = "out"
action = "write"
params = {{ path = "out.txt" }}
"""


def wait_for(pred: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_warninglisted_values_never_reach_the_destination():
    """Two guarded RSS sources: the list file holds exactly the wanted and residual values, no flagged one."""
    atom, rdf = FEEDS["feed-atom"], FEEDS["feed-rss10"]
    flagged = atom.expected("expected_warninglisted.txt") | rdf.expected("expected_warninglisted.txt")
    wanted = (atom.extractable | rdf.extractable) - flagged
    d = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        with corpus_server() as web:
            d.write_config(config(web.base))
            d.start().wait_ready()
            out = d.dir / "out.txt"
            want_lines = sorted(v for _, v in wanted)
            wait_for(lambda: out.exists() and sorted(out.read_text().splitlines()) == want_lines, "the list file")
            lines = set(out.read_text().splitlines())
            assert not lines & {v for _, v in flagged}
            [ind] = d.ctl_json("indicators", "show", "8.8.8.8")
            assert (ind["active"], ind["warninglist"]) == (False, "public-dns-v4")
            assert ind["sources"][0]["warninglist_held"] is True
            shown = d.ctl("indicators", "show", "8.8.8.8").stdout
            assert "public-dns-v4 (held)" in shown
            sources = {s["name"]: s for s in d.ctl_json("sources")}
            assert sources["atom"]["last_counts"]["warninglisted"] == len(atom.expected("expected_warninglisted.txt"))
            assert sources["rdf"]["last_counts"]["warninglisted"] == 1
            assert "WARNINGLISTED" in d.ctl("sources").stdout
            assert d.stop() == 0
    finally:
        d.cleanup()
