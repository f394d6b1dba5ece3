"""Source actor: schedule, backoff, Retry-After, disable on auth errors, on-demand sync."""

from __future__ import annotations

import itertools

import pytest
import trio

from ctd.ask import ask
from ctd.config import parse_config
from ctd.errors import AuthError, SourceUnavailable
from ctd.model import Rejected
from ctd.sources.actor import AllowlistRef, PullNow, SourceStatus, pull_once, run_source
from tests.fake_adapters import Fakes, Script
from tests.fakestore import FakeStore


def plugin(key: str, extra: str = ""):
    if "sync_interval" not in extra:
        extra += 'sync_interval = "60s"\n'
    cfg = parse_config(f'[plugins.p]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "{key}"\n{extra}')
    return cfg.plugins["p"]


@pytest.fixture
def store(tmp_path):
    s = FakeStore(str(tmp_path / "db"))
    yield s
    s.close()


async def start(nursery, store, key, script, extra=""):
    fakes = Fakes()
    fakes.scripts[key] = script
    p = plugin(key, extra)
    status = SourceStatus("p", p)
    send, recv = trio.open_memory_channel(4)
    await nursery.start(run_source, "p", p, fakes.adapter("p", p), store, AllowlistRef(), status, recv)
    return status, send


async def test_pulls_every_sync_interval(store, autojump_clock, nursery):
    """A healthy source pulls at once, then every sync_interval."""
    sc = Script()
    await start(nursery, store, "sched", sc)
    await trio.sleep(200)
    assert [round(t) for t, _ in sc.calls] == [0, 60, 120, 180]


async def test_backoff_is_exponential(store, autojump_clock, nursery):
    """Failures back off exponentially (10 s, 20 s, 40 s ... with ±20% jitter)."""
    sc = Script(errors=[SourceUnavailable("down")] * 5)
    await start(nursery, store, "backoff", sc, 'sync_interval = "6h"\n')
    await trio.sleep(400)
    times = [t for t, _ in sc.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, base in zip(gaps, [10, 20, 40, 80, 160], strict=True):
        assert base * 0.8 <= gap <= base * 1.2


async def test_retry_after_honoured(store, autojump_clock, nursery):
    """A peer's Retry-After is waited out even when backoff would be shorter."""
    sc = Script(errors=[SourceUnavailable("slow down", retry_after=300)])
    await start(nursery, store, "ra", sc)
    await trio.sleep(400)
    times = [t for t, _ in sc.calls]
    assert times[1] - times[0] >= 300


async def test_auth_error_disables_until_reload(store, autojump_clock, nursery):
    """An auth error disables the source: no retries until the config is reloaded."""
    sc = Script(errors=[AuthError("401 bad token")])
    status, _ = await start(nursery, store, "auth", sc)
    await trio.sleep(86000)  # most of a day, in virtual time
    assert len(sc.calls) == 1
    assert status.state == "disabled" and "401" in status.last_error


async def test_sync_request_pulls_now(store, autojump_clock, nursery):
    """A sync request runs a pull immediately and replies with its counts."""
    sc = Script(batches=[["a.example", "b.example"]])
    _, send = await start(nursery, store, "sync", sc, 'sync_interval = "1d"\n')
    await trio.sleep(10)
    result = await ask(send, PullNow())
    assert len(sc.calls) == 2 and result.updated == 2 and result.error is None


async def test_checkpoint_advances(store, autojump_clock, nursery):
    """The second pull starts from the first cycle's start; the first from initial_range back."""
    sc = Script()
    await start(nursery, store, "cp", sc, 'initial_range = "14d"\n')
    await trio.sleep(61)
    first, second = sc.calls[0][1], sc.calls[1][1]
    assert first.now - first.since == 14 * 86400
    assert second.since == first.now


async def test_status_records_error_and_counts(store, autojump_clock, nursery):
    """The status shows the last error, then the counts of the next good pull."""
    sc = Script(errors=[SourceUnavailable("connection refused")], batches=[["a.example"]])
    status, _ = await start(nursery, store, "st", sc)
    await trio.sleep(1)
    assert status.state == "backoff" and "refused" in status.last_error
    await trio.sleep(30)
    assert status.last_error is None and status.last_counts.new == 1


async def test_rejections_counted_by_class_and_kept_in_the_store(store):
    """A pull counts rejections by reason class and the store keeps them (allow-listed reports too)."""
    sc = Script(
        batches=[["a.example", "good.example"]],
        rejected=[
            Rejected(where="line 1", reason="not a valid domain name: 'x..y'"),
            Rejected(where="line 2", reason="unsupported type 'asn'", kind="unsupported_type"),
            Rejected(where="indicator--1", reason="MATCHES comparison", kind="unsupported_pattern"),
            Rejected(where="line 3", reason="bad first_seen '99-99'", kind="field"),
        ],
    )
    fakes = Fakes()
    fakes.scripts["rej"] = sc
    p = plugin("rej")
    allow = AllowlistRef(lambda t, v: v == "good.example")
    res = await pull_once("p", p, fakes.adapter("p", p), store, allow, SourceStatus("p", p))
    assert (res.invalid, res.unsupported, res.field_warnings, res.allowlisted) == (1, 2, 1, 1)
    kept = await store.rejections("p")
    assert [r["where"] for r in kept["malformed"]] == ["line 1"]
    assert [r["reason"] for r in kept["unsupported_type"]] == ["unsupported type 'asn'"]
    assert [r["where"] for r in kept["unsupported_pattern"]] == ["indicator--1"]
    assert [r["where"] for r in kept["field"]] == ["line 3"]
    assert [r["where"] for r in kept["allowlisted"]] == ["domain good.example"]
