"""The destination's ids for what it created: returned by push, kept in the ledger, handed to retract."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

import msgspec
import pytest

from ctd.config import parse_config
from ctd.model import ActionSpec, Adapter, PushResult, ShareItem
from ctd.sharing.actor import Sharer
from ctd.store import schema
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s


class NoParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class IdDestination(Adapter):
    """Creates one entry per value and answers its id (``id-N``); remembers what retract received."""

    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add", mode="incremental", params=NoParams, batch_size=10),
    }
    held: ClassVar[dict[str, str]] = {}
    pushed: ClassVar[list[ShareItem]] = []
    retracted: ClassVar[list[ShareItem]] = []
    answer_ids: ClassVar[bool] = True
    counter: ClassVar[list[int]] = [0]

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        ids = {}
        for it in items:
            type(self).pushed.append(it)
            if it.remote_id is None:
                type(self).counter[0] += 1
                type(self).held[it.value] = f"id-{type(self).counter[0]}"
            if type(self).answer_ids:
                ids[it.value] = type(self).held[it.value]
        return PushResult(ids=ids)

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        for it in items:
            type(self).retracted.append(it)
            type(self).held.pop(it.value, None)
        return PushResult()


CFG = """
[plugins.src]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.dest]
adapter = "tests.test_remote_ids:IdDestination"
pull = false
[rules.r]
filter = "type = domain"
[sharing.s]
sources = ["src"]
rule = "r"
destination = "dest"
action = "add"
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


@pytest.fixture(autouse=True)
def fresh_destination():
    IdDestination.held = {}
    IdDestination.pushed = []
    IdDestination.retracted = []
    IdDestination.answer_ids = True
    IdDestination.counter = [0]


def make(store: FakeStore) -> Sharer:
    cfg = parse_config(CFG)
    sh = cfg.sharing["s"]
    return Sharer("s", sh, cfg.rules["r"], cfg.plugins["dest"], IdDestination("dest", None), store)


def remote_ids(store: FakeStore) -> dict[str, str | None]:
    return dict(
        store.conn.execute("SELECT i.value, d.remote_id FROM delivery d JOIN indicator i ON i.id = d.iid").fetchall()
    )


async def test_ids_a_push_returns_are_kept_in_the_ledger(store):
    """The ids PushResult.ids names are recorded per (sharing, indicator)."""
    ingest(store.conn, "src", [s("a.example"), s("b.example")])
    await make(store).share_once()
    assert remote_ids(store) == {"a.example": "id-1", "b.example": "id-2"} or remote_ids(store) == {
        "a.example": "id-2",
        "b.example": "id-1",
    }


async def test_retraction_receives_the_recorded_id(store):
    """A withdrawn IoC reaches retract() with the id its push returned."""
    ingest(store.conn, "src", [s("a.example")])
    sharer = make(store)
    await sharer.share_once()
    store.conn.execute("UPDATE sighting SET retracted = 1")
    store.conn.execute("UPDATE indicator SET active = 0")
    store.conn.execute("UPDATE source SET changes = changes + 1")  # behind the store API: move the marks too
    await sharer.share_once()
    assert [(it.value, it.remote_id) for it in IdDestination.retracted] == [("a.example", "id-1")]


async def test_a_withdrawn_and_shared_again_ioc_gets_a_new_id(store):
    """Once withdrawn, the old id is forgotten: the next push creates anew and its id is recorded."""
    ingest(store.conn, "src", [s("a.example")])
    sharer = make(store)
    await sharer.share_once()
    store.conn.execute("UPDATE sighting SET retracted = 1")
    store.conn.execute("UPDATE indicator SET active = 0")
    store.conn.execute("UPDATE source SET changes = changes + 1")  # behind the store API: move the marks too
    await sharer.share_once()
    assert remote_ids(store) == {"a.example": None}
    ingest(store.conn, "src", [s("a.example")], now=1_800_000_100)
    await sharer.share_once()
    assert [it.remote_id for it in IdDestination.pushed] == [None, None]
    assert remote_ids(store) == {"a.example": "id-2"}


async def test_an_update_knows_the_id_and_a_push_without_ids_keeps_it(store):
    """A changed IoC is pushed with its recorded id; a reply naming no id leaves the recorded one."""
    ingest(store.conn, "src", [s("a.example")])
    sharer = make(store)
    await sharer.share_once()
    IdDestination.answer_ids = False
    ingest(store.conn, "src", [s("a.example", severity="high")], now=1_800_000_100)
    await sharer.share_once()
    assert [it.remote_id for it in IdDestination.pushed] == [None, "id-1"]
    assert remote_ids(store) == {"a.example": "id-1"}


def test_migration_adds_a_nullable_remote_id_to_existing_ledgers(tmp_path):
    """A database from before the column gets it, empty for the rows it already had."""
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    for script in schema.MIGRATIONS[:5]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO sharing (id, name) VALUES (1, 's')")
    conn.execute("INSERT INTO delivery (shid, iid, state, updated_at) VALUES (1, 1, 'shared', 0)")
    conn.commit()
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    assert conn.execute("SELECT remote_id FROM delivery").fetchall() == [(None,)]
    conn.close()
