"""Sharing actors: event-driven wake-ups, coalescing, backoff, and no ping-pong between tools."""

from __future__ import annotations

import shutil

import pytest
import trio

from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.model import Sighting
from ctd.sharing.actor import Sharer, SharingStatus, Wake, run_sharing
from tests.daemonproc import short_tmpdir
from tests.exchange import Exchange
from tests.fake_adapters import Fakes, Script
from tests.fakestore import FakeStore
from tests.inprocess import running
from tests.storeutil import ingest, s


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


CFG = """
[plugins.a]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "{key}"
pull = false
[rules.r]
filter = "type = domain"
[sharing.s]
sources = ["a"]
rule = "r"
destination = "dest"
action = "add"
interval = "1h"
"""


def make_sharer(store, fakes, key):
    cfg = parse_config(CFG.replace("{key}", key))
    sh = cfg.sharing["s"]
    return Sharer("s", sh, cfg.rules["r"], cfg.plugins["dest"], fakes.adapter("dest", cfg.plugins["dest"]), store)


async def test_wakeups_coalesce_into_one_pass(store, autojump_clock, nursery):
    """A burst of wake-ups while the actor waits results in one pass, not one per wake-up."""
    sharer = make_sharer(store, Fakes(), "coalesce")
    passes = []
    real = sharer.share_once

    async def counting():
        passes.append(trio.current_time())
        return await real()

    sharer.share_once = counting
    send, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, SharingStatus("s", sharer.sh), recv)
    await trio.sleep(1)
    assert len(passes) == 1  # the initial pass of a new configuration
    for _ in range(50):
        try:
            send.send_nowait(Wake())
        except trio.WouldBlock:
            pass
    await trio.sleep(1)
    assert len(passes) == 2


async def test_failed_pass_backs_off(store, autojump_clock, nursery):
    """A destination failure is retried with growing backoff, not at the full interval."""
    fakes = Fakes()
    sharer = make_sharer(store, fakes, "backoff")
    ingest(store.conn, "a", [s("x.example")])
    fakes.remote("backoff").errors = [SourceUnavailable("503")] * 3
    send, recv = trio.open_memory_channel(8)
    status = SharingStatus("s", sharer.sh)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(200)
    calls = fakes.remote("backoff").calls
    assert len(calls) == 4 and "x.example" in fakes.remote("backoff").items
    assert status.last_error is None


async def test_bidirectional_sharing_does_not_ping_pong(store):
    """A->B plus B->A: each IoC reaches the other tool once and never comes back to its reporter."""
    fakes = Fakes()
    ra, rb = fakes.remote("pingA"), fakes.remote("pingB")
    ra.items["from-a.example"] = Sighting(type="domain", value="from-a.example")  # type: ignore[assignment]
    rb.items["from-b.example"] = Sighting(type="domain", value="from-b.example")  # type: ignore[assignment]
    cfg = parse_config("""
[plugins.A]
adapter = "tests.fake_adapters:MemoryDestination"
key = "pingA"
[plugins.B]
adapter = "tests.fake_adapters:MemoryDestination"
key = "pingB"
[rules.all]
filter = "type = domain"
[sharing.a-to-b]
sources = ["A"]
rule = "all"
destination = "B"
action = "add"
params = { list = "b" }
[sharing.b-to-a]
sources = ["B"]
rule = "all"
destination = "A"
action = "add"
params = { list = "a" }
""")
    ex = Exchange(cfg, {n: fakes.adapter(n, p) for n, p in cfg.plugins.items()}, store)
    for _round in range(3):
        await ex.round()
    pushed_to_a = [v for op, vals in ra.calls if op == "push" for v in vals]
    pushed_to_b = [v for op, vals in rb.calls if op == "push" for v in vals]
    assert pushed_to_a == ["from-b.example"]
    assert pushed_to_b == ["from-a.example"]


async def test_new_ioc_reaches_destination_without_waiting_for_interval():
    """With an hour-long interval, a newly ingested IoC is shared right after its batch commits."""
    d = short_tmpdir()
    try:
        fakes = Fakes()
        remote = fakes.remote("event")
        src = fakes.scripts["event-src"] = Script(batches=[["first.example"]])
        (d / "ctd.toml").write_text(
            f'[daemon]\nstate_dir = "{d}/var"\nsocket = "{d}/ctd.sock"\n'
            '[plugins.a]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "event-src"\nsync_interval = "1h"\n'
            + CFG.split("[plugins.dest]")[1].join(["[plugins.dest]", ""]).replace("{key}", "event")
        )
        async with running(d / "ctd.toml", fakes) as daemon:
            with trio.fail_after(30):
                await remote.wait_until(lambda: "first.example" in remote.items)
            src.batches = [["first.example", "second.example"]]
            await daemon.sync("a")
            with trio.fail_after(30):  # the interval is 1h: only a wake-up can deliver it in time
                await remote.wait_until(lambda: "second.example" in remote.items)
    finally:
        shutil.rmtree(d, ignore_errors=True)
