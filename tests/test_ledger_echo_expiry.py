"""Two ledger gaps: a destination's echo of what ctd shared, and an expiry that moved later."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest

from ctd.adapters.defender.adapter import DefenderAdapter
from ctd.config import parse_config
from ctd.model import ActionSpec, Sighting, now
from ctd.sharing.actor import Sharer
from tests.emulators.defender import DefenderEmulator, parse_time
from tests.exchange import Exchange
from tests.fake_adapters import Fakes, MemoryDestination, MemoryParams
from tests.fakestore import FakeStore
from tests.storeutil import DAY, ingest, s


class ExpiringDestination(MemoryDestination):
    """A MemoryDestination that, like an EDR, drops each entry at the expiry it was given."""

    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add", mode="incremental", params=MemoryParams, carries_expiry=True),
    }


CFG = """
[plugins.a]
adapter = "file"
path = "unused.txt"
pull = false
[plugins.D]
adapter = "tests.test_ledger_echo_expiry:{cls}"
key = "D"
[rules.all]
filter = "type = domain"
[sharing.to-d]
sources = ["a"]
rule = "all"
destination = "D"
action = "add"
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def setup(store: FakeStore, cls: str = "ExpiringDestination") -> tuple[Fakes, Exchange, Any]:
    fakes = Fakes()
    cfg = parse_config(CFG.replace("{cls}", cls))
    adapters = {n: fakes.adapter(n, p) for n, p in cfg.plugins.items()}
    return fakes, Exchange(cfg, adapters, store), cfg


def ledger(store: FakeStore) -> dict[str, tuple[str, Any, Any]]:
    return {
        v: (st, exp, at)
        for v, st, exp, at in store.conn.execute(
            "SELECT i.value, d.state, d.expires_at, d.shared_at FROM delivery d JOIN indicator i ON i.id = d.iid"
        )
    }


# --- echo ------------------------------------------------------------------------------------


async def test_an_echo_of_what_ctd_shared_keeps_it_shared(store):
    """The destination later reports an IoC ctd sent it: it stays shared there, never withdrawn."""
    fakes, ex, _ = setup(store, "MemoryDestination")
    ingest(store.conn, "a", [s("sent.example")], now=now())
    for _round in range(3):  # D pulls (reports what it holds) before each pass
        await ex.round()
    remote = fakes.remote("D")
    assert set(remote.items) == {"sent.example"}
    assert not [c for c in remote.calls if c[0] == "retract"]
    assert ledger(store)["sent.example"][0] == "shared"


async def test_what_the_destination_reported_first_is_never_pushed_to_it(store):
    """Loop prevention still holds for an IoC the destination reported before ctd shared it."""
    fakes, ex, _ = setup(store, "MemoryDestination")
    fakes.remote("D").items["theirs.example"] = Sighting(type="domain", value="theirs.example")  # type: ignore[assignment]
    await ex.round()  # D reports it
    ingest(store.conn, "a", [s("theirs.example"), s("ours.example")], now=now(), fresh=False)
    await ex.round()
    await ex.round()
    pushed = {v for op, vals in fakes.remote("D").calls if op == "push" for v in vals}
    assert pushed == {"ours.example"}


# --- expiry ----------------------------------------------------------------------------------


async def test_the_pushed_expiry_is_recorded(store):
    """The ledger keeps the expiry each push carried."""
    t = now()
    _, ex, _ = setup(store)
    ingest(store.conn, "a", [s("x.example", last_seen=t)], now=t, aging_days=30)
    await ex.sharers[0].share_once()
    assert ledger(store)["x.example"][:2] == ("shared", t + 30 * DAY)


async def test_a_later_expiry_is_pushed_before_the_copy_lapses(store):
    """A re-sighting past half of the destination copy's life pushes the new expiry (30-day aging, seen 20 days on)."""
    t = now()
    fakes, ex, _ = setup(store)
    ingest(store.conn, "a", [s("x.example", last_seen=t)], now=t, aging_days=30)
    sh = ex.sharers[0]
    await sh.share_once()
    # As if pushed 20 days ago with a 30-day expiry, and re-seen now (expiry now + 30 d).
    store.conn.execute("UPDATE delivery SET shared_at = ?, expires_at = ?", (t - 20 * DAY, t + 10 * DAY))
    ingest(store.conn, "a", [s("x.example", last_seen=t + 5)], now=t + 5, aging_days=30, fresh=False)
    res = await sh.share_once()
    assert res.pushed == 1 and fakes.remote("D").items["x.example"].expires_at == t + 5 + 30 * DAY
    assert ledger(store)["x.example"][1] == t + 5 + 30 * DAY


async def test_a_re_sighting_early_in_the_copys_life_is_not_pushed(store):
    """A daily re-sighting does not re-push: the destination's copy has most of its life left."""
    t = now()
    fakes, ex, _ = setup(store)
    ingest(store.conn, "a", [s("x.example", last_seen=t)], now=t, aging_days=30)
    sh = ex.sharers[0]
    await sh.share_once()
    store.conn.execute("UPDATE delivery SET shared_at = ?, expires_at = ?", (t - DAY, t + 29 * DAY))
    ingest(store.conn, "a", [s("x.example", last_seen=t + 5)], now=t + 5, aging_days=30, fresh=False)
    res = await sh.share_once()
    assert res.pushed == 0 and len([c for c in fakes.remote("D").calls if c[0] == "push"]) == 1


async def test_a_destination_without_expiry_is_not_re_pushed_for_it(store):
    """A destination that does not enforce expiries gets no push when only the expiry moved."""
    t = now()
    fakes, ex, _ = setup(store, "MemoryDestination")
    ingest(store.conn, "a", [s("x.example", last_seen=t)], now=t, aging_days=30)
    sh = ex.sharers[0]
    await sh.share_once()
    store.conn.execute("UPDATE delivery SET shared_at = ?, expires_at = ?", (t - 20 * DAY, t + 10 * DAY))
    ingest(store.conn, "a", [s("x.example", last_seen=t + 5)], now=t + 5, aging_days=30, fresh=False)
    assert (await sh.share_once()).pushed == 0


async def test_defender_gets_the_new_expiration_time_in_place(store):
    """Through the Defender emulator: the re-pushed IoC's expirationTime moves later on the same indicator."""
    t = now()
    emu = DefenderEmulator(epoch=t)
    cfg = parse_config(
        '[tenants.mde]\ntenant_id = "tenant-1"\nclient_id = "mde-app"\nclient_secret = "mde-secret"\n'
        'url = "https://api.defender.test"\nlogin_url = "https://login.defender.test"\n'
        '[plugins.mde]\nadapter = "defender"\ntenant = "mde"\npull = false\n'
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n[rules.r]\nfilter = "type = domain"\n'
        '[sharing.to-mde]\nsources = ["feed"]\nrule = "r"\ndestination = "mde"\naction = "indicator"\n'
    )
    mde = DefenderAdapter("mde", cfg.plugins["mde"].options, httpx.AsyncClient(transport=emu.transport()))
    sh = Sharer("to-mde", cfg.sharing["to-mde"], cfg.rules["r"], cfg.plugins["mde"], mde, store)
    ingest(store.conn, "feed", [s("evil.example", last_seen=t)], now=t, aging_days=30)
    await sh.share_once()
    [(ident, ind)] = emu.indicators.items()
    assert parse_time(ind["expirationTime"]) == t + 30 * DAY
    store.conn.execute("UPDATE delivery SET shared_at = ?, expires_at = ?", (t - 20 * DAY, t + 10 * DAY))
    ingest(store.conn, "feed", [s("evil.example", last_seen=t + 60)], now=t + 60, aging_days=30, fresh=False)
    await sh.share_once()
    assert list(emu.indicators) == [ident]
    assert parse_time(emu.indicators[ident]["expirationTime"]) == t + 60 + 30 * DAY
