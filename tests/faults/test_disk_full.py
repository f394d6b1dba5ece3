"""A state_dir filled to its last byte (a small tmpfs): the daemon stays up, says "state_dir full" per
actor and in its state, and carries on by itself when space returns (issue 11, finding 1)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.faults.helpers import counters_match, fill, no_duplicates, store_values, tmpfs


def feed(n: int, start: int = 0) -> str:
    return "".join(f"h{i}.full.example\n" for i in range(start, start + n))


@pytest.fixture
def site() -> Iterator[tuple[Path, Path]]:
    """A work directory (feed, socket, the list written) and an 8 MB tmpfs as state_dir."""
    d = short_tmpdir()
    try:
        with tmpfs("8m") as fs:
            yield d, fs
    finally:
        shutil.rmtree(d, ignore_errors=True)


def daemon(d: Path, fs: Path) -> DaemonProc:
    return DaemonProc(
        d,
        f'[daemon]\nstate_dir = "{fs}/var"\nsocket = "{d}/ctd.sock"\nhousekeeping_interval = "1s"\n'
        f'[plugins.feed]\nadapter = "file"\npath = "{d}/feed.txt"\nsync_interval = "1h"\n'
        '[plugins.list]\nadapter = "file"\npull = false\npath = "/dev/null"\n'
        '[rules.all]\nfilter = "type = domain"\n'
        '[sharing.out]\nsources = ["feed"]\nrule = "all"\ndestination = "list"\naction = "write"\n'
        f'interval = "2s"\nparams = {{ path = "{d}/out.txt" }}\n',
    )


def events(d: DaemonProc, name: str) -> list[dict]:
    return [e for e in d.logs() if e.get("ctd_event") == name]


def test_full_state_dir_never_ends_the_daemon(site: tuple[Path, Path]) -> None:
    """Pull, pass, bookkeeping and housekeeping fail on a full disk; the daemon stays up, says why, and the
    failed pull is retried at its backoff (not an hour later) once space returns: nothing lost or doubled."""
    d, fs = site
    (d / "feed.txt").write_text(feed(2000))
    p = daemon(d, fs)
    try:
        p.start().wait_ready()
        wait_for(lambda: events(p, "source_pull_completed"), "the first pull")
        filler = fill(fs)
        (d / "feed.txt").write_text(feed(20000))
        r = p.ctl("sync", "feed")
        assert r.returncode == 2 and "state_dir full" in r.stderr, r.stderr
        wait_for(lambda: events(p, "failure_not_recorded"), "the failure that could not be written")
        st = p.ctl_json("status")
        assert st["state"] == "degraded" and st["store"] == "full"
        assert any("state_dir full" in problem for problem in st["problems"])
        [src] = [s for s in st["sources"] if s["name"] == "feed"]
        assert src["state"] == "backoff" and "state_dir full" in src["last_error"]
        # Nothing new was committed, so the regular passes have nothing to do (change generations); a
        # re-share asked by the operator has to write, and fails on the full disk.
        r = p.ctl("sharing", "sync", "out")
        assert r.returncode == 2 and "state_dir full" in r.stderr, r.stderr
        wait_for(lambda: events(p, "sharing_failed"), "a sharing pass that failed on the full disk")
        [sh] = p.ctl_json("sharing", "list")
        assert sh["state"] == "backoff" and "state_dir full" in sh["last_error"]
        assert p.proc is not None and p.proc.poll() is None
        filler.free()
        completed = len(events(p, "source_pull_completed"))
        wait_for(lambda: len(events(p, "source_pull_completed")) > completed, "the retry at backoff", timeout=40)
        assert p.ctl_json("status")["state"] == "running"
        assert p.stop() == 0
        rows = store_values(fs / "var" / "ctd.db")
        no_duplicates(rows)
        assert {v for _, v in rows} == set(feed(20000).split())
        counters_match(fs / "var" / "ctd.db")
    finally:
        p.cleanup()


def test_start_on_a_full_state_dir_waits_for_space(site: tuple[Path, Path]) -> None:
    """Started on a full disk the daemon does not crash-loop: it waits, `ctdctl status` says "state_dir full",
    and it becomes ready by itself when space returns, its store intact."""
    d, fs = site
    (d / "feed.txt").write_text(feed(2000))
    p = daemon(d, fs)
    try:
        p.start().wait_ready()
        wait_for(lambda: events(p, "source_pull_completed"), "the first pull")
        assert p.stop() == 0
        filler = fill(fs)
        p.start()
        wait_for(lambda: events(p, "store_full"), "the store waiting for space")
        r = p.ctl("status")
        assert r.returncode == 2 and "state_dir full" in r.stderr and "waiting for space" in r.stderr, r.stderr
        assert p.proc is not None and p.proc.poll() is None
        filler.free()
        p.wait_ready(timeout=60)
        assert p.ctl_json("status")["state"] == "running"
        assert p.stop() == 0
        rows = store_values(fs / "var" / "ctd.db")
        no_duplicates(rows)
        assert len(rows) == 2000
    finally:
        p.cleanup()
