"""Fault injection, pulls: the real daemon killed or reloaded in the middle of a pull."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.faults.dest_helpers import daemon_up, kill, read, sub_checkpoint

BATCH = 1000


@pytest.fixture
def daemon() -> Iterator[DaemonProc]:
    d = DaemonProc(short_tmpdir(), "")
    yield d
    d.cleanup()


def source(d: DaemonProc, pause_after: int, extra: str = "") -> str:
    return f"""
[plugins.big]
adapter = "tests.faults.slow_adapters:PausingSource"
path = "big.txt"
batch_size = {BATCH}
sync_interval = "1h"
pause_file = "{d.dir}/pause"
pause_after = {pause_after}
{extra}
"""


def write(d: DaemonProc, values: list[str]) -> None:
    tmp = d.dir / "big.txt.new"
    tmp.write_text("".join(v + "\n" for v in values))
    tmp.replace(d.dir / "big.txt")  # a new file, atomically (what the file adapter asks of producers)


def paused_at(d: DaemonProc, line: int) -> bool:
    sub = sub_checkpoint(d, "big")
    return sub is not None and sub.get("line") == line


def pull_done(d: DaemonProc) -> bool:
    rows = read(d, "SELECT sub, last_success FROM source WHERE name = 'big'") if (d.dir / "var").exists() else []
    return bool(rows) and rows[0][0] is None and rows[0][1] is not None


def hosts(n: int) -> list[str]:
    return [f"host{i}.bulk.example" for i in range(n)]


def test_a_file_changed_while_the_daemon_was_down_mid_pull_is_a_fresh_snapshot(daemon):
    """SIGKILL after 14,000 of 50,000 lines were committed; the file is rewritten without the first 12,000;
    after the restart those 12,000 end inactive and the other 38,000 active."""
    d = daemon
    d.write_config(source(d, pause_after=14))
    values = hosts(50_000)
    write(d, values)
    (d.dir / "pause").touch()
    d.start()
    wait_for(lambda: paused_at(d, 14 * BATCH), "14 committed batches", 60)
    kill(d)
    write(d, values[12_000:])
    (d.dir / "pause").unlink()
    d.start().wait_ready()
    wait_for(lambda: pull_done(d), "the resumed pull", 60)
    removed = set(values[:12_000])
    rows = read(d, "SELECT value, active FROM indicator")
    assert {v for v, a in rows if a} == set(values[12_000:])
    assert {v for v, a in rows if not a} == removed
    assert daemon_up(d) and d.stop() == 0


def test_a_reload_that_changes_tags_mid_pull_reaches_what_was_committed_before(daemon):
    """A reload changes the source's tags and reputation while its pull is paused half-way: after the
    resumed pull, the values committed before the reload carry the new tags and reputation too."""
    d = daemon
    d.write_config(source(d, pause_after=3, extra='tags = ["old"]\nreputation = 3'))
    values = hosts(8_000)
    write(d, values)
    (d.dir / "pause").touch()
    d.start().wait_ready()
    wait_for(lambda: paused_at(d, 3 * BATCH), "3 committed batches", 60)
    d.write_config(source(d, pause_after=3, extra='tags = ["new"]\nreputation = 8'))
    assert d.ctl_rc("reload") == 0
    (d.dir / "pause").unlink()
    wait_for(lambda: pull_done(d), "the resumed pull", 60)
    for value in (values[0], values[2_999], values[-1]):
        [ind] = d.ctl_json("indicators", "show", value)
        assert ind["tags"] == ["new"] and ind["reputation"] == 8, ind
    old = read(d, "SELECT count(*) FROM sighting WHERE tags LIKE '%old%' OR reputation = 3")
    assert old == [(0,)]
    assert daemon_up(d) and d.stop() == 0
