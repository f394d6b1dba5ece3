"""What a source rejected, kept per reason class and shown by `ctdctl sources show` (issue 12 finding 7)."""

from __future__ import annotations

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.loopback import ok, serve

FEED = b"""# a csv feed with a bad value, a type ctd does not hold, an unreadable date and an allow-listed value
value,type,first_seen
evil.example,domain,2026-01-02
http://www..example.com/phishing,url,2026-01-02
AS64496,asn,2026-01-02
bad-date.example,domain,someday
good.example,domain,2026-01-02
"""


@pytest.fixture
def daemon():
    with serve(handler=ok(FEED)) as server:
        d = DaemonProc(
            short_tmpdir(),
            f"""
[allowlist]
values = ["good.example"]

[plugins.feed]
adapter = "feed"
url = "{server.base}/feed.csv"
format = "csv"
value_column = "value"
type_column = "type"
first_seen_column = "first_seen"
sync_interval = "1h"
""",
        )
        yield d
        d.cleanup()


def test_sources_show_lists_rejections_by_class(daemon):
    """`ctdctl sources show NAME` lists the rejected records by reason class, with where and why (also --json)."""
    daemon.start().wait_ready()
    wait_for(lambda: any(e.get("ctd_event") == "source_pull_completed" for e in daemon.logs()), what="the pull")
    data = daemon.ctl_json("sources", "show", "feed")
    rej = data["rejected"]
    assert [(r["where"], r["reason"]) for r in rej["malformed"]] == [
        (
            "line 4",
            "not a valid url host 'www..example.com' (not a valid domain name): 'http://www..example.com/phishing'",
        )
    ]
    assert [r["where"] for r in rej["unsupported_type"]] == ["line 5"]
    assert [(r["where"], r["reason"]) for r in rej["field"]] == [("line 6", "bad first_seen 'someday' (dropped)")]
    assert [r["where"] for r in rej["allowlisted"]] == ["domain good.example"]
    assert data["last_counts"]["invalid"] == 1 and data["last_counts"]["unsupported"] == 1
    text = daemon.ctl("sources", "show", "feed")
    assert text.returncode == 0, text.stderr
    assert "malformed records (counted invalid): 1 kept" in text.stdout
    assert "line 4" in text.stdout and "www..example.com" in text.stdout
    assert daemon.ctl("sources", "show", "nope").returncode == 4  # what it names does not exist
    assert daemon.stop() == 0
