"""`ctd run --once` reports failures as the daemon does (issue 12 finding 4): every source's log lines carry
`ctd_source`, a failed source gets a `source_pull_failed` event, and each reason is said once, on one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctd.errors import UpstreamDataError, describe
from tests.daemonproc import REPO, env
from tests.loopback import Received, serve

BODIES = {
    "/good.txt": b"198.51.100.1\n198.51.100.2\nnot-an-ip!\n",
    "/bad.json": b"[1, 2",
    "/error.txt": b"<html>\n<body>\n<h1>503 Service Unavailable</h1>\n</body>\n</html>\n",
}


def handler(req: Received) -> tuple[int, dict[str, str], bytes]:
    body = BODIES.get(req.target)
    return (200, {"Content-Type": "text/plain"}, body) if body is not None else (404, {}, b"no\n")


@pytest.fixture(scope="module")
def once(tmp_path_factory) -> tuple[int, list[str], list[dict]]:
    tmp: Path = tmp_path_factory.mktemp("once")
    with serve(handler=handler) as server:
        cfg = tmp / "ctd.toml"
        cfg.write_text(
            f'[daemon]\nstate_dir = "{tmp}/var"\nsocket = "{tmp}/ctd.sock"\n'
            f'[plugins.good]\nadapter = "feed"\nurl = "{server.base}/good.txt"\n'
            f'[plugins.badjson]\nadapter = "feed"\nurl = "{server.base}/bad.json"\nformat = "json"\n'
            f'[plugins.errorpage]\nadapter = "feed"\nurl = "{server.base}/error.txt"\n'
            '[plugins.refused]\nadapter = "feed"\nurl = "http://127.0.0.1:9/x.txt"\n'
        )
        e = env(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        r = subprocess.run(
            [sys.executable, "-m", "ctd", "run", "--once", "--config", str(cfg)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=e,
            timeout=120,
        )
    events = []
    for line in r.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return r.returncode, r.stdout.splitlines(), events


def test_failures_fail_the_run_with_one_line_each(once):
    """Each failed source is one FAILED line (a multi-line parser message is cut to its first line); exit 1."""
    rc, lines, _ = once
    assert rc == 1
    by_source = {ln.split(":", 1)[0]: ln for ln in lines}
    assert set(by_source) == {"good", "badjson", "errorpage", "refused"}, lines
    assert by_source["good"].startswith("good: ok new=2 updated=0 invalid=1 ")
    assert by_source["badjson"].count("bad JSON") == 1 and "premature EOF" in by_source["badjson"]
    assert "FAILED" in by_source["errorpage"] and "no indicator in the body" in by_source["errorpage"]
    assert "FAILED" in by_source["refused"]


def test_every_source_log_line_names_its_source(once):
    """Log lines about a pull carry ctd_source, as under the daemon."""
    _, _, events = once
    about_pulls = [e for e in events if e.get("ctd_event") not in ("store_opened", "store_closed")]
    assert about_pulls and all("ctd_source" in e for e in about_pulls), about_pulls


def test_a_failed_source_gets_source_pull_failed(once):
    """Every failed source logs source_pull_failed with its reason; the good one logs source_pull_completed."""
    _, _, events = once
    failed = {e["ctd_source"]: e for e in events if e.get("ctd_event") == "source_pull_failed"}
    assert set(failed) == {"badjson", "errorpage", "refused"}
    assert "premature EOF" in failed["badjson"]["error"] and "\n" not in failed["badjson"]["error"]
    done = [e["ctd_source"] for e in events if e.get("ctd_event") == "source_pull_completed"]
    assert done == ["good"]


def test_describe_honours_raise_from_none():
    """`raise ... from None` hides the context: the reason is said once, not once per link of the chain."""
    try:
        try:
            raise ValueError("bad JSON: premature EOF")
        except ValueError as exc:
            raise UpstreamDataError(f"feed x: {exc}") from None
    except UpstreamDataError as outer:
        assert describe(outer) == "feed x: bad JSON: premature EOF"
