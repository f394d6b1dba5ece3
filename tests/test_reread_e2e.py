"""Re-reading a source after an upgrade (issue 12 finding 8): `ctdctl checkpoint reset` with a real daemon."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.loopback import Received, Server, serve

UUID = "5f9585c8-2e40-4b4d-9a8e-6a4b6c0a1c5e"
EVENT = {
    "Event": {
        "uuid": UUID,
        "info": "x",
        "timestamp": "1603642920",
        "Attribute": [{"type": "ip-dst", "value": "203.0.113.45", "to_ids": True, "timestamp": "1603642920"}],
    }
}
FILES = {
    "/misp/manifest.json": json.dumps({UUID: {"timestamp": 1603642920, "info": "x"}}).encode(),
    f"/misp/{UUID}.json": json.dumps(EVENT).encode(),
}


def handler(req: Received) -> tuple[int, dict[str, str], bytes]:
    body = FILES.get(req.target)
    if body is None:
        return 404, {}, b""
    return 200, {"Content-Type": "application/json", "ETag": '"m1"'}, body


@pytest.fixture
def served():
    with serve(handler=handler) as server:
        d = DaemonProc(
            short_tmpdir(),
            f'[plugins.osint]\nadapter = "feed"\nurl = "{server.base}/misp/"\nformat = "misp"\nsync_interval = "1d"\n',
        )
        yield d, server
        d.cleanup()


def event_fetches(server: Server) -> int:
    return sum(1 for r in server.received if r.target.endswith(f"{UUID}.json"))


def test_checkpoint_reset_rereads_a_misp_feed(served):
    """After `checkpoint reset`, the next pull reads every event again; without it, a done event is not re-read."""
    daemon, server = served
    daemon.start().wait_ready()
    wait_for(lambda: event_fetches(server) == 1, what="the first pull")
    assert daemon.ctl("sync", "osint").returncode == 0  # an unchanged feed: 304, no event read
    assert event_fetches(server) == 1
    reset = daemon.ctl("checkpoint", "reset", "osint")
    assert reset.returncode == 0 and "reads again" in reset.stdout
    cp = daemon.ctl_json("checkpoint", "show", "osint")
    assert cp["cursor"] is None and cp["last_run"] is None and cp["resume_point"] is None
    assert daemon.ctl("sync", "osint").returncode == 0
    assert event_fetches(server) == 2
    db = sqlite3.connect(f"file:{daemon.dir}/var/ctd.db?mode=ro", uri=True)
    assert db.execute("SELECT count(*), max(hits) FROM indicator").fetchone() == (1, 2)  # a re-report, once
    db.close()
    assert daemon.ctl("checkpoint", "reset", "nope").returncode == 4  # what it names does not exist
    assert daemon.stop() == 0
