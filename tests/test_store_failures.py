"""A store that cannot write (full disk) or is damaged never ends an actor (issue 11, findings 1 and 5)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from ctd.config import parse_config
from ctd.errors import StoreDamaged, StoreError, StoreFull
from ctd.policy import next_attempt
from ctd.sharing.actor import Sharer, SharingStatus, run_sharing
from ctd.sources.actor import AllowlistRef, SourceStatus, run_source
from ctd.store.requests import CountBySource, CountIndicators, GetCheckpoint, GetListHash, GetMutes, ShowIndicators
from tests.fake_adapters import Fakes, Script
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

READS = (GetCheckpoint, GetMutes, CountIndicators, CountBySource, ShowIndicators, GetListHash)
FULL = "state_dir full: /var/lib/ctd has no space left (database or disk is full)"


class BrokenDiskStore(FakeStore):
    """The SQLite store with a disk that fills up: while ``full``, every write fails as SQLite's would."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.full = False
        self.fail_reads: type[StoreError] | None = None
        self.failed: list[str] = []

    async def _execute(self, request: Any) -> Any:
        if self.fail_reads is not None:
            await trio.lowlevel.checkpoint()
            raise self.fail_reads("the store is not running")
        if self.full and not isinstance(request, READS):
            await trio.lowlevel.checkpoint()
            self.failed.append(type(request).__name__)
            raise StoreFull(FULL)
        return await super()._execute(request)


@pytest.fixture
def store(tmp_path):
    st = BrokenDiskStore(str(tmp_path / "db"))
    yield st
    st.close()


def plugin(key: str, interval: str = "1h"):
    cfg = parse_config(
        f'[plugins.p]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "{key}"\nsync_interval = "{interval}"\n'
    )
    return cfg.plugins["p"]


async def start_source(nursery, store, key, script, interval="1h"):
    fakes = Fakes()
    fakes.scripts[key] = script
    p = plugin(key, interval)
    status = SourceStatus("p", p)
    send, recv = trio.open_memory_channel(4)
    await nursery.start(run_source, "p", p, fakes.adapter("p", p), store, AllowlistRef(), status, recv)
    return status


async def test_source_survives_a_failure_it_cannot_record(store, autojump_clock, nursery):
    """A full disk fails the pull and its bookkeeping: the actor keeps it in memory and retries at its backoff."""
    store.full = True
    sc = Script(batches=[["a.example", "b.example"]])
    status = await start_source(nursery, store, "full", sc)
    await trio.sleep(1)
    assert "RecordPullError" in store.failed  # the pull failed, and so did its bookkeeping
    assert status.state == "backoff" and "state_dir full" in (status.last_error or "")
    store.full = False
    await trio.sleep(15)  # the backoff: 10 s ±20%, not the hour of sync_interval
    assert len(sc.calls) == 1 and 8 <= sc.calls[0][0] <= 12
    assert status.state == "idle" and status.last_error is None
    assert {r["value"] for r in await store.search(type_=None, source=None, active=None, limit=10)} == {
        "a.example",
        "b.example",
    }


async def test_unrecorded_failure_is_written_once_the_store_takes_writes(store, autojump_clock, nursery):
    """The failure kept in memory is recorded as the source's last_error when the store can write again."""
    store.full = True
    sc = Script(batches=[["a.example"], ["b.example"]])
    await start_source(nursery, store, "rec", sc)
    await trio.sleep(1)
    store.full = False
    sc.gate = trio.Event()  # hold the retry after its first batch
    await sc.in_pull.wait()
    cp = await store.checkpoint("p")
    assert cp.last_error is not None and "state_dir full" in cp.last_error
    sc.gate.set()


async def test_source_starts_when_its_checkpoint_cannot_be_read(store, autojump_clock, nursery):
    """A store error while the actor starts does not end it (or the daemon's start): it pulls and backs off."""
    store.fail_reads = StoreError
    sc = Script(batches=[["a.example"]])
    status = await start_source(nursery, store, "start", sc)
    await trio.sleep(1)
    assert status.state == "backoff" and "not running" in (status.last_error or "")
    store.fail_reads = None
    await trio.sleep(15)
    assert status.state == "idle" and len(sc.calls) >= 1


async def test_a_failed_last_pull_is_retried_at_once_after_a_restart(store, autojump_clock, nursery):
    """A source whose last pull failed (its error recorded) pulls at start, not a whole sync_interval later."""
    t = int(time.time())
    await store.complete_pull("p", cycle_start=t, now=t)  # a pull just completed: the next is due in an hour
    await store.record_error("p", "pull timed out after 600 s")  # ... but the one after it failed
    sc = Script(batches=[["a.example"]])
    await start_source(nursery, store, "restart", sc)
    await trio.sleep(1)
    assert len(sc.calls) == 1


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


async def test_sharing_survives_a_failure_it_cannot_record(store, autojump_clock, nursery):
    """A full disk fails the pass and its finish_pass: the sharing actor backs off and shares once space returns."""
    fakes = Fakes()
    sharer = make_sharer(store, fakes, "full")
    ingest(store.conn, "a", [s("x.example")])
    store.full = True
    status = SharingStatus("s", sharer.sh)
    send, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(1)
    assert "FinishPass" in store.failed
    assert status.state == "backoff" and "state_dir full" in (status.last_error or "")
    store.full = False
    await trio.sleep(15)
    assert "x.example" in fakes.remote("full").items and status.last_error is None


async def test_resync_request_on_a_full_disk_is_answered(store, autojump_clock, nursery):
    """`ctdctl sharing sync` on a full disk gets the error as its answer; the actor lives on and recovers."""
    from ctd.ask import ask
    from ctd.sharing.actor import ShareNow

    sharer = make_sharer(store, Fakes(), "resync")
    status = SharingStatus("s", sharer.sh)
    send, recv = trio.open_memory_channel(8)
    await nursery.start(run_sharing, sharer, status, recv)
    await trio.sleep(1)
    store.full = True
    result = await ask(send, ShareNow(resync=True))
    assert result.error is not None and "state_dir full" in result.error
    store.full = False
    result = await ask(send, ShareNow(resync=True))
    assert result.deferred and "state_dir full" in result.error  # in backoff: answered at once, nothing sent
    await trio.sleep(120)  # past the backoff (10 s doubling, with jitter), the attempt it kept for then runs
    result = await ask(send, ShareNow(resync=True))
    assert result.error is None


def test_damaged_store_halts_instead_of_retrying():
    """A damaged database is not retried every backoff: the actor waits for an operator (a restore and restart)."""
    attempt = next_attempt(StoreDamaged("database damaged: malformed"), 1, interval=60)
    assert attempt.state == "halted" and attempt.delay == float("inf")
    assert next_attempt(StoreFull(FULL), 3, interval=60).state == "backoff"
