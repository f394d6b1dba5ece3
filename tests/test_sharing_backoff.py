"""The backoff after a failed pass (and a destination's Retry-After) is a floor, whatever wakes the actor."""

from __future__ import annotations

import pytest
import trio

from ctd.ask import ask
from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.sharing.actor import ShareNow, Sharer, SharingStatus, Wake, run_sharing
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

CFG = """
[plugins.a]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "dest"
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


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def make(store: FakeStore, fakes: Fakes) -> tuple[Sharer, list[float]]:
    """The sharer, and the (trio) times at which the destination was called."""
    cfg = parse_config(CFG)
    adapter = fakes.adapter("dest", cfg.plugins["dest"])
    times: list[float] = []
    push = adapter.push

    async def timed_push(*args):  # type: ignore[no-untyped-def]
        times.append(trio.current_time())
        return await push(*args)

    adapter.push = timed_push  # type: ignore[method-assign]
    return Sharer("s", cfg.sharing["s"], cfg.rules["r"], cfg.plugins["dest"], adapter, store), times


async def test_retry_after_holds_against_wakeups_every_8_seconds(store, autojump_clock, nursery):
    """429 Retry-After 120 and a source committing every 8 s: the next request goes out no earlier than 120 s later."""
    fakes = Fakes()
    sharer, times = make(store, fakes)
    ingest(store.conn, "a", [s("x.example")])
    fakes.remote("dest").errors = [SourceUnavailable("HTTP 429", retry_after=120)]
    send, recv = trio.open_memory_channel(8)
    status = SharingStatus("s", sharer.sh)
    await nursery.start(run_sharing, sharer, status, recv)
    for _ in range(30):  # 240 s of commits, one every 8 s
        await trio.sleep(8)
        ingest(store.conn, "a", [s(f"n{trio.current_time():.0f}.example")], fresh=False)
        send.send_nowait(Wake())
    assert len(times) >= 2
    assert times[1] - times[0] >= 120
    assert status.last_error is None and "x.example" in fakes.remote("dest").items


async def test_sharing_sync_during_backoff_answers_at_once_without_calling(store, autojump_clock, nursery):
    """`sharing sync` in backoff answers at once with the state and next attempt; the destination is not called."""
    fakes = Fakes()
    sharer, times = make(store, fakes)
    ingest(store.conn, "a", [s("x.example")])
    fakes.remote("dest").errors = [SourceUnavailable("HTTP 503", retry_after=300)]
    send, recv = trio.open_memory_channel(8)
    status = SharingStatus("s", sharer.sh)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(1)
    assert len(times) == 1 and status.state == "backoff"
    t0 = trio.current_time()
    result = await ask(send, ShareNow(resync=True), who="sharing s")
    assert trio.current_time() == t0  # answered at once
    assert result.deferred and "503" in result.error and result.next_attempt is not None
    assert len(times) == 1
    await trio.sleep(300)
    assert len(times) == 2 and "x.example" in fakes.remote("dest").items  # the attempt at the end of the backoff


async def test_after_a_success_a_wakeup_runs_a_pass_at_once(store, autojump_clock, nursery):
    """The regular interval is not a floor: once out of backoff, a wake-up runs a pass right away."""
    fakes = Fakes()
    sharer, times = make(store, fakes)
    ingest(store.conn, "a", [s("x.example")])
    send, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, SharingStatus("s", sharer.sh), recv)
    await trio.sleep(1)
    ingest(store.conn, "a", [s("y.example")], fresh=False)
    send.send_nowait(Wake())
    await trio.sleep(1)
    assert len(times) == 2
