"""One error policy: what a source or sharing actor does after a failed pull or pass."""

from __future__ import annotations

import pytest
import trio

from ctd.config import parse_config
from ctd.errors import (
    AuthError,
    ConfigError,
    SourceUnavailable,
    StoreError,
    TimedOut,
    UpstreamDataError,
    describe,
)
from ctd.policy import BACKOFF_CAP, backoff_delay, deadline, next_attempt, real_cause
from ctd.sharing.actor import SharingStatus, run_sharing
from ctd.sources.actor import AllowlistRef, SourceStatus, run_source
from tests.fake_adapters import Fakes, Script
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s
from tests.test_sharing_actor import make_sharer

MID = lambda: 0.5  # noqa: E731  (no jitter)


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


# --- the table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failures", "state", "delay"),
    [
        (AuthError("401"), 1, "disabled", float("inf")),
        (SourceUnavailable("down"), 1, "backoff", 10.0),
        (SourceUnavailable("down"), 3, "backoff", 40.0),
        (SourceUnavailable("slow down", retry_after=900), 1, "backoff", 900.0),
        (TimedOut("pull", 600), 2, "backoff", 20.0),
        (trio.TooSlowError(), 1, "backoff", 10.0),
        (UpstreamDataError("bad JSON"), 1, "idle", 3600.0),
        (UpstreamDataError("bad JSON"), 9, "idle", 3600.0),
        (StoreError("disk I/O error"), 1, "backoff", 10.0),
        (ConfigError("tenant gone"), 1, "backoff", 10.0),
        (RuntimeError("a bug"), 1, "backoff", 10.0),
        (ExceptionGroup("nursery", [AuthError("403")]), 1, "disabled", float("inf")),
        (ExceptionGroup("nursery", [UpstreamDataError("bad")]), 1, "idle", 3600.0),
    ],
)
def test_next_attempt_table(exc, failures, state, delay):
    """Each error class maps to one state and delay, the same for every actor."""
    got = next_attempt(exc, failures, interval=3600.0, rng=MID)
    assert (got.state, got.delay) == (state, delay)


def test_backoff_jitter_bounds():
    """Backoff jitter stays within ±20% and is capped at one hour."""
    assert backoff_delay(1, None, rng=lambda: 0.0) == 8.0
    assert backoff_delay(1, None, rng=lambda: 1.0) == pytest.approx(12.0)
    assert backoff_delay(30, None, rng=MID) == BACKOFF_CAP == 3600.0


def test_real_cause_unwraps_nursery_groups():
    """A nursery's ExceptionGroup is reduced to the error inside it (Cancelled siblings ignored)."""
    inner = SourceUnavailable("connection refused")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert real_cause(group) is inner
    assert real_cause(inner) is inner
    two = ExceptionGroup("two", [RuntimeError("bug"), AuthError("401")])
    assert isinstance(real_cause(two), AuthError)  # the error the policy knows wins over a bare one


async def test_deadline_says_what_timed_out(autojump_clock):
    """A deadline raises TimedOut whose message says what timed out and after how long."""
    with pytest.raises(TimedOut) as info:
        with deadline(5, "pull"):
            async with trio.open_nursery() as n:
                n.start_soon(trio.sleep_forever)
                await trio.sleep_forever()
    assert describe(info.value) == "pull timed out after 5 s"
    assert info.value.seconds == 5


# --- the source actor -------------------------------------------------------------------


async def start_source(nursery, store, script, extra=""):
    fakes = Fakes()
    fakes.scripts["k"] = script
    cfg = parse_config(f'[plugins.p]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "k"\n{extra}')
    p = cfg.plugins["p"]
    status = SourceStatus("p", p)
    send, recv = trio.open_memory_channel(4)
    await nursery.start(run_source, "p", p, fakes.adapter("p", p), store, AllowlistRef(), status, recv)
    return status


async def test_undecodable_data_waits_for_the_next_interval(store, autojump_clock, nursery):
    """UpstreamDataError is retried at the next sync_interval, not with an outage's backoff."""
    sc = Script(errors=[UpstreamDataError("bad JSON")] * 3)
    status = await start_source(nursery, store, sc, 'sync_interval = "60s"\n')
    await trio.sleep(1)
    assert status.state == "idle" and status.last_error == "bad JSON"
    await trio.sleep(200)
    assert [round(t) for t, _ in sc.calls] == [0, 60, 120, 180]


async def test_pull_timeout_message(store, autojump_clock, nursery):
    """A pull that overruns the plugin's timeout reads 'pull timed out after N s' and backs off."""
    sc = Script(batches=[["a.example"], ["b.example"]])
    sc.gate = trio.Event()  # never set: the pull hangs after its first batch
    status = await start_source(nursery, store, sc, 'timeout = "5s"\n')
    await trio.sleep(6)
    assert status.last_error == "pull timed out after 5 s"
    assert status.state == "backoff"


async def test_error_inside_a_nursery_is_unwrapped(store, autojump_clock, nursery):
    """An adapter whose own nursery raises a group is judged (and shown) by the error inside it."""
    sc = Script(errors=[ExceptionGroup("Exceptions from Trio nursery", [AuthError("401 bad token")])])
    status = await start_source(nursery, store, sc)
    await trio.sleep(1)
    assert status.state == "disabled" and status.last_error == "401 bad token"


# --- the sharing actor -------------------------------------------------------------------


async def test_sharing_push_timeout_message(store, autojump_clock, nursery):
    """A push that overruns the destination's timeout reads 'push timed out after N s'."""
    fakes = Fakes()
    sharer = make_sharer(store, fakes, "slow")
    ingest(store.conn, "a", [s("x.example")])
    fakes.remote("slow").gate = trio.Event()  # never set: the push hangs
    status = SharingStatus("s", sharer.sh)
    _, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(601)
    assert status.last_error == "push timed out after 600 s"
    assert status.state == "backoff"


async def test_sharing_undecodable_reply_waits_for_the_interval(store, autojump_clock, nursery):
    """A destination's undecodable reply is retried at the sharing interval, not with backoff."""
    fakes = Fakes()
    sharer = make_sharer(store, fakes, "garbled")
    ingest(store.conn, "a", [s("x.example")])
    fakes.remote("garbled").errors = [UpstreamDataError("reply is not JSON")] * 2
    status = SharingStatus("s", sharer.sh)
    _, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(1)
    assert status.last_error == "reply is not JSON" and status.state == "idle"
    await trio.sleep(2 * 3600 + 1)
    calls = fakes.remote("garbled").calls
    assert len(calls) == 3 and "x.example" in fakes.remote("garbled").items
