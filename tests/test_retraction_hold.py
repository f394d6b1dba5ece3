"""An operator's retraction is kept against the source's re-reports until lifted or until its expiry (issue 13)."""

from __future__ import annotations

import pytest

from ctd.store import manual
from ctd.store import query as store_query
from ctd.store import sql as store_sql
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.storeutil import DAY, NOW, ingest, s, show


@pytest.fixture
def conn(tmp_path):
    c = store_sql.connect(str(tmp_path / "t.db"))
    yield c
    c.close()


def ids(conn, value: str, typ: str = "domain") -> list[int]:
    return store_query.find_ids(conn, [(typ, value)])


def test_rereport_keeps_an_operator_retraction_for_that_source(conn) -> None:
    """The held source's next report stays retracted and is counted; another source still counts."""
    ingest(conn, "a", [s("x.example")], snapshot_end=True)
    ingest(conn, "b", [s("y.example")])
    assert manual.retract(conn, ids(conn, "x.example"), "a", NOW, None) == 1
    r = ingest(conn, "a", [s("x.example"), s("z.example")], snapshot_end=True, now=NOW + 60)
    assert (r.held, r.held_examples) == (1, ("domain:x.example",))
    x = show(conn, "domain", "x.example")
    assert not x["active"] and x["sources"][0]["retracted"]
    assert x["operator_retraction"] == [{"source": "a", "since": x["operator_retraction"][0]["since"], "until": None}]
    ingest(conn, "b", [s("x.example")], now=NOW + 120)  # not held for b
    assert show(conn, "domain", "x.example")["active"]


def test_retraction_for_every_source_holds_new_sources_too(conn) -> None:
    """Without --source the hold covers every source, also one that reports the value only later."""
    ingest(conn, "a", [s("x.example")])
    manual.retract(conn, ids(conn, "x.example"), None, NOW, None)
    r = ingest(conn, "b", [s("x.example")], now=NOW + 60)
    assert r.held == 1
    assert not show(conn, "domain", "x.example")["active"]


def test_unretract_lifts_the_hold(conn) -> None:
    """After unretract, the source's next report makes the value active again."""
    ingest(conn, "a", [s("x.example")])
    manual.retract(conn, ids(conn, "x.example"), "a", NOW, None)
    assert manual.unretract(conn, ids(conn, "x.example"), "a") == 1
    assert manual.unretract(conn, ids(conn, "x.example"), "a") == 0
    r = ingest(conn, "a", [s("x.example")], now=NOW + 60)
    assert r.held == 0 and show(conn, "domain", "x.example")["active"]


def test_hold_ends_at_its_expiry(conn) -> None:
    """A retraction given --until no longer holds after that time."""
    ingest(conn, "a", [s("x.example")])
    manual.retract(conn, ids(conn, "x.example"), "a", NOW, NOW + DAY)
    assert ingest(conn, "a", [s("x.example")], now=NOW + 60).held == 1
    r = ingest(conn, "a", [s("x.example")], now=NOW + DAY + 1)
    assert r.held == 0 and show(conn, "domain", "x.example")["active"]


def test_source_retraction_is_not_counted_as_held(conn) -> None:
    """A source that itself retracts a held value is not reported as re-reporting it."""
    ingest(conn, "a", [s("x.example")])
    manual.retract(conn, ids(conn, "x.example"), "a", NOW, None)
    assert ingest(conn, "a", [s("x.example", retracted=True)], now=NOW + 60).held == 0


FEED = """
[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"
"""


def test_daemon_keeps_a_manual_retraction_across_pulls() -> None:
    """With the real daemon: retract --source osint survives `sync osint` (logged), unretract lifts it."""
    d = DaemonProc(short_tmpdir(), FEED)
    try:
        (d.dir / "osint.txt").write_text("evil.example\n")
        d.start().wait_ready()
        wait_for(lambda: d.ctl_json("indicators", "search", "--source", "osint"), "the first pull")
        r = d.ctl("indicators", "retract", "evil.example", "--source", "osint")
        assert r.returncode == 0, r.stderr
        assert d.ctl("sync", "osint").returncode == 0
        [ind] = d.ctl_json("indicators", "show", "evil.example")
        assert not ind["active"] and ind["operator_retraction"][0]["source"] == "osint"
        shown = d.ctl("indicators", "show", "evil.example").stdout
        assert "RETRACTED_BY_OPERATOR" in shown
        kept = [e for e in d.logs() if e.get("ctd_event") == "indicator_retraction_kept"]
        assert kept and kept[-1]["ctd_source"] == "osint" and "domain:evil.example" in kept[-1]["examples"]
        assert d.ctl("indicators", "unretract", "evil.example").returncode == 0
        assert d.ctl("sync", "osint").returncode == 0
        [ind] = d.ctl_json("indicators", "show", "evil.example")
        assert ind["active"] and ind["operator_retraction"] == []
        assert d.ctl("indicators", "unretract", "evil.example").returncode == 4  # nothing left to lift
        assert d.stop() == 0
    finally:
        d.cleanup()
