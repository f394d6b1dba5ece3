"""A sharing pass with nothing changed does not plan; change generations move with every relevant change (issue 14)."""

from __future__ import annotations

import pytest

from ctd.config import parse_config
from ctd.sharing.actor import Sharer
from ctd.store import changes
from ctd.store import guard as store_guard
from ctd.store import manual as store_manual
from ctd.store import query as store_query
from ctd.store import sql as store_sql
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.storeutil import DAY, NOW, ingest, s

SRC = 'adapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "unused"\npull = false\n'
CFG = f"""
[plugins.a]
{SRC}
[plugins.b]
{SRC}
[plugins.c]
{SRC}
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "dest"
pull = false
[plugins.full]
adapter = "tests.fake_adapters:FullDestination"
key = "full"
pull = false
[rules.r]
filter = '{{rule}}'
[sharing.s]
sources = ["a"]
rule = "r"
destination = "{{dest}}"
action = "{{action}}"
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def make(store, rule="type = domain", dest="dest", action="add", fakes=None) -> Sharer:
    cfg = parse_config(CFG.format(rule=rule, dest=dest, action=action))
    plugin = cfg.plugins[dest]
    return Sharer("s", cfg.sharing["s"], cfg.rules["r"], plugin, (fakes or Fakes()).adapter(dest, plugin), store)


def traced(store) -> list[str]:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    return statements


def marks(store, *sources: str) -> dict[str, int]:
    return dict(changes.marks(store.conn, sources))


@pytest.mark.parametrize(("dest", "action"), [("dest", "add"), ("full", "replace")])
async def test_a_pass_with_nothing_changed_does_not_plan(store, dest, action):
    """After a pass, a pass with no commit, expiry or rule change reads the change marks only: no plan, no scan."""
    ingest(store.conn, "a", [s("x.example"), s("y.example")])
    sh = make(store, dest=dest, action=action)
    await sh.share_once()
    statements = traced(store)
    res = await sh.share_once()
    store.conn.set_trace_callback(None)
    assert res.unchanged and res.candidates == 2 and res.pushed == 0
    assert len(statements) == 1 and "FROM source" in statements[0], statements


async def test_a_commit_from_a_source_makes_the_next_pass_plan(store):
    """A batch from one of its sources: the next pass plans and shares it."""
    fakes = Fakes()
    sh = make(store, fakes=fakes)
    ingest(store.conn, "a", [s("x.example")])
    await sh.share_once()
    await sh.share_once()
    ingest(store.conn, "a", [s("new.example")], fresh=False)
    res = await sh.share_once()
    assert res.pushed == 1 and set(fakes.remote("dest").items) == {"x.example", "new.example"}


async def test_another_sources_unrelated_commit_does_not_wake_planning(store):
    """A batch from a source the sharing does not read, of indicators its sources do not report: no plan."""
    ingest(store.conn, "a", [s("x.example")])
    sh = make(store)
    await sh.share_once()
    ingest(store.conn, "b", [s("other.example")])
    statements = traced(store)
    await sh.share_once()
    store.conn.set_trace_callback(None)
    assert len(statements) == 1


async def test_a_rule_with_times_relative_to_now_always_plans(store):
    """A rule such as `last_seen > now - 1d` selects differently as time passes: every pass plans."""
    ingest(store.conn, "a", [s("x.example", last_seen=NOW)])
    sh = make(store, rule="last_seen > now - 1d")
    await sh.share_once()
    statements = traced(store)
    await sh.share_once()
    store.conn.set_trace_callback(None)
    assert any("cand_" in st for st in statements)


async def test_a_mute_change_makes_the_next_pass_plan(store):
    """An operator's mute override that changed is a reason to plan again."""
    ingest(store.conn, "a", [s("x.example")])
    sh = make(store)
    await sh.share_once()
    sh.mutes["r"] = 0  # explicitly unmuted (ctdctl rules unmute): not muted, but changed
    statements = traced(store)
    await sh.share_once()
    store.conn.set_trace_callback(None)
    assert any("cand_" in st for st in statements)


def test_ingest_moves_its_source_and_the_sources_sharing_its_indicators(store):
    """An ingest moves its own source, and another source only where that one reports an indicator of the batch."""
    ingest(store.conn, "a", [s("shared.example"), s("a-only.example")])
    ingest(store.conn, "c", [s("c-only.example")])
    before = marks(store, "a", "b", "c")
    ingest(store.conn, "b", [s("shared.example")])  # a reports it too: a's selection may change
    after = marks(store, "a", "b", "c")
    assert after["b"] > before["b"] and after["a"] > before["a"] and after["c"] == before["c"]


def test_a_snapshot_end_moves_the_sources_of_what_it_retracted(store):
    """What a snapshot's end retracts for one source moves every source reporting it."""
    ingest(store.conn, "a", [s("gone.example"), s("kept.example")])
    ingest(store.conn, "b", [s("gone.example")])
    ingest(store.conn, "c", [s("c.example")])
    before = marks(store, "a", "b", "c")
    ingest(store.conn, "a", [s("kept.example")], fresh=True, snapshot_end=True, now=NOW + 1)
    after = marks(store, "a", "b", "c")
    assert after["a"] > before["a"] and after["b"] > before["b"] and after["c"] == before["c"]


def test_expiry_moves_the_sources_of_what_expired(store):
    """The expiry sweep moves the sources of the indicators it made inactive, and only those."""
    ingest(store.conn, "a", [s("short.example")], aging_days=1)
    ingest(store.conn, "b", [s("long.example")], aging_days=90)
    before = marks(store, "a", "b")
    assert store_sql.expire(store.conn, NOW + 2 * DAY) == 1
    after = marks(store, "a", "b")
    assert after["a"] > before["a"] and after["b"] == before["b"]
    store_sql.expire(store.conn, NOW + 3 * DAY)  # nothing more expired
    assert marks(store, "a", "b") == after


def test_operator_retraction_moves_the_sources_of_the_indicator(store):
    """`ctdctl indicators retract` moves every source reporting the retracted indicator."""
    ingest(store.conn, "a", [s("x.example")])
    ingest(store.conn, "b", [s("y.example")])
    before = marks(store, "a", "b")
    store_manual.retract(store.conn, store_query.find_ids(store.conn, [("domain", "x.example")]), None, NOW, None)
    after = marks(store, "a", "b")
    assert after["a"] > before["a"] and after["b"] == before["b"]


def test_reload_reevaluations_move_the_sources_they_touch(store):
    """A reload's allowlist and warning-list re-evaluation move the sources whose indicators flipped."""
    ingest(store.conn, "a", [s("x.example")])
    ingest(store.conn, "b", [s("y.example")])
    before = marks(store, "a", "b")
    store_sql.reapply_allowlist(store.conn, lambda t, v: v == "x.example", NOW)
    mid = marks(store, "a", "b")
    assert mid["a"] > before["a"] and mid["b"] == before["b"]
    store_guard.apply_guard(store.conn, "b", "lists-v1", lambda t, v: "list", False, NOW)
    after = marks(store, "a", "b")
    assert after["b"] > mid["b"] and after["a"] == mid["a"]


async def test_an_operator_resync_makes_the_next_pass_plan(store):
    """`ctdctl sharing sync` (resync) changes the ledger: the next pass plans and pushes again."""
    fakes = Fakes()
    ingest(store.conn, "a", [s("x.example")])
    sh = make(store, fakes=fakes)
    await sh.share_once()
    await store.resync("s", since=None)
    res = await sh.share_once()
    assert res.pushed == 1
