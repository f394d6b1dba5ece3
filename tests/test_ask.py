"""ask(): every request is answered, or fails clearly when its actor stops; nobody waits forever."""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

import outcome
import pytest
import trio
import trio.testing

from ctd.ask import answer, ask, close_inbox
from ctd.config import parse_config
from ctd.errors import ActorStopped, StoreClosed
from ctd.sharing.actor import ShareNow, Sharer, SharingStatus, run_sharing
from ctd.sources.actor import AllowlistRef, PullNow, SourceStatus, run_source
from ctd.store import IngestBatch, run_store, to_stage_rows
from tests.fake_adapters import Fakes, Script
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


class Outcomes:
    """Asks run as tasks; what each ended with."""

    def __init__(self) -> None:
        self.results: list[object] = []
        self.errors: list[BaseException] = []

    async def ask(self, inbox: trio.MemorySendChannel, request: object, **kw: Any) -> None:
        try:
            self.results.append(await ask(inbox, request, **kw))
        except ActorStopped as exc:
            self.errors.append(exc)


# --- ask() itself ------------------------------------------------------------------------


async def test_ask_returns_the_answer_and_raises_the_actors_error(nursery):
    """ask() returns what the actor answered, and raises the error it answered with."""
    send, recv = trio.open_memory_channel(1)

    async def actor():
        async for msg in recv:
            if msg.request == "boom":
                answer(msg.reply, outcome.Error(ValueError("boom")))
            else:
                answer(msg.reply, outcome.Value(msg.request * 2))

    nursery.start_soon(actor)
    assert await ask(send, 21) == 42
    with pytest.raises(ValueError, match="boom"):
        await ask(send, "boom")


async def test_ask_to_an_actor_that_is_gone_raises_at_once():
    """Asking an actor whose inbox is closed raises the given error, naming who was asked."""
    send, recv = trio.open_memory_channel(1)
    close_inbox(recv)
    with pytest.raises(ActorStopped, match="source 'x' is not running"):
        await ask(send, PullNow(), who="source 'x'")


async def test_close_inbox_fails_every_queued_request(autojump_clock):
    """Requests still queued when an actor exits get an error instead of waiting forever."""
    send, recv = trio.open_memory_channel(4)
    asks = Outcomes()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(asks.ask, send, i)
            await trio.testing.wait_all_tasks_blocked()
            close_inbox(recv)
    assert asks.results == [] and len(asks.errors) == 3
    assert "stopped before answering" in str(asks.errors[0])


def test_answer_to_an_asker_that_went_away_is_dropped():
    """Answering a request whose asker was cancelled neither raises nor leaves the channel open."""
    reply, gone = trio.open_memory_channel(1)
    gone.close()
    answer(reply, outcome.Value(1))
    with pytest.raises(trio.ClosedResourceError):
        reply.send_nowait(outcome.Value(2))


# --- the source actor ----------------------------------------------------------------------


def source_plugin(key: str):
    cfg = parse_config(
        f'[plugins.p]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "{key}"\nsync_interval = "1d"\n'
    )
    return cfg.plugins["p"]


async def test_sync_in_flight_fails_when_the_source_actor_is_cancelled(store, autojump_clock):
    """A sync being served, and one queued behind it, both fail when the source actor is cancelled mid-pull."""
    fakes = Fakes()
    sc = fakes.scripts["ask-source"] = Script(batches=[["a.example"], ["b.example"]])
    sc.gate = trio.Event()
    p = source_plugin("ask-source")
    send, recv = trio.open_memory_channel(4)
    asks = Outcomes()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            actor = trio.CancelScope()

            async def source(task_status=trio.TASK_STATUS_IGNORED):
                with actor:
                    await run_source(
                        "p",
                        p,
                        fakes.adapter("p", p),
                        store,
                        AllowlistRef(),
                        SourceStatus("p", p),
                        recv,
                        task_status=task_status,
                    )

            await nursery.start(source)
            await sc.in_pull.wait()  # the first (scheduled) pull, held after its first batch
            nursery.start_soon(asks.ask, send, PullNow())  # queued while the source is busy
            await trio.testing.wait_all_tasks_blocked()
            first, sc.gate, sc.in_pull = sc.gate, trio.Event(), trio.Event()
            first.set()
            await sc.in_pull.wait()  # the pull that serves the sync: the request is in flight
            nursery.start_soon(asks.ask, send, PullNow())  # and one queued behind it
            await trio.testing.wait_all_tasks_blocked()
            actor.cancel()  # what a reload that changes the source does
    assert asks.results == [] and len(asks.errors) == 2


# --- the sharing actor ----------------------------------------------------------------------

SHARING = """
[plugins.a]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "ask-sharing"
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


async def test_share_in_flight_fails_when_the_sharing_actor_is_cancelled(store, autojump_clock):
    """A `sharing sync` being served, and one queued behind it, fail when the sharing actor is cancelled."""
    fakes = Fakes()
    remote = fakes.remote("ask-sharing")
    remote.gate = trio.Event()
    cfg = parse_config(SHARING)
    sharer = Sharer(
        "s", cfg.sharing["s"], cfg.rules["r"], cfg.plugins["dest"], fakes.adapter("dest", cfg.plugins["dest"]), store
    )
    ingest(store.conn, "a", [s("x.example")])
    send, recv = trio.open_memory_channel(8)
    asks = Outcomes()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            actor = trio.CancelScope()

            async def sharing(task_status=trio.TASK_STATUS_IGNORED):
                with actor:
                    await run_sharing(sharer, SharingStatus("s", sharer.sh), recv, task_status=task_status)

            await nursery.start(sharing)
            await remote.in_push.wait()  # the first pass, held in its push
            nursery.start_soon(asks.ask, send, ShareNow())
            await trio.testing.wait_all_tasks_blocked()
            ingest(store.conn, "a", [s("y.example")])  # so the requested pass has something to push
            first, remote.gate, remote.in_push = remote.gate, trio.Event(), trio.Event()
            first.set()
            await remote.in_push.wait()  # the pass that serves the request: in flight
            nursery.start_soon(asks.ask, send, ShareNow())
            await trio.testing.wait_all_tasks_blocked()
            actor.cancel()
    assert asks.results == [] and len(asks.errors) == 2


# --- the store actor -----------------------------------------------------------------------------


async def test_requests_queued_at_the_store_fail_when_it_stops(tmp_path):
    """Requests queued at the store when it is cancelled get StoreClosed, not a hang; the one running finishes."""
    busy, release = threading.Event(), threading.Event()

    def held(typ: str, value: str) -> bool:  # runs in the store's thread: holds it until released
        busy.set()
        return release.wait(20) and False

    outcomes: list[object] = []

    async def run(call):
        try:
            outcomes.append(await call())
        except StoreClosed as exc:
            outcomes.append(exc)

    with trio.fail_after(20):  # a guard only: on a hang the test fails instead of blocking the suite
        async with trio.open_nursery() as nursery:
            actor = trio.CancelScope()

            async def serve(task_status=trio.TASK_STATUS_IGNORED):
                with actor:
                    await run_store(str(tmp_path / "db"), task_status=task_status)

            store = await nursery.start(serve)
            await store.ingest(
                IngestBatch(
                    source="a",
                    rows=to_stage_rows([s("x.example")], now=1, reputation=None, extra_tags=(), allowlisted=None),
                    policy="last_seen",
                    aging_days=1,
                    now=1,
                    fresh=True,
                    snapshot_end=False,
                    sub=None,
                    cursor=None,
                )
            )
            async with trio.open_nursery() as asks:
                asks.start_soon(run, partial(store.reapply_allowlist, held, 2))
                await trio.to_thread.run_sync(busy.wait, 20)
                for _ in range(4):
                    asks.start_soon(run, store.mutes)  # (counts are answered from a snapshot: never queued)
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().queued == 4
                actor.cancel()
                release.set()
    closed = [o for o in outcomes if isinstance(o, StoreClosed)]
    assert len(outcomes) == 5 and len(closed) == 4 and 0 in outcomes  # 0: the held request's own answer
    with pytest.raises(StoreClosed, match="not running"):
        await store.mutes()
