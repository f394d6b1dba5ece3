"""Two-phase destinations: a change counts as shared or withdrawn only once the destination applied it."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import msgspec
import pytest

from ctd.adapters.netskope.adapter import NetskopeAdapter
from ctd.config import parse_config
from ctd.errors import ConfigError, SourceUnavailable
from ctd.model import ActionSpec, Adapter, PushResult, ShareItem, now
from ctd.plugins import checked
from ctd.sharing.actor import Sharer
from ctd.store import schema
from ctd.store import sql as store_sql
from tests.emulators.netskope import NetskopeTenant
from tests.fake_adapters import FakeAdapter, Fakes
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

CFG = """
[tenants.prod]
url = "https://acme.goskope.com"
token = "v2-secret"
[plugins.a]
adapter = "file"
path = "unused.txt"
pull = false
[plugins.ns]
adapter = "netskope"
tenant = "prod"
pull = false
[rules.urls]
filter = "type = url"
[sharing.u]
sources = ["a"]
rule = "urls"
destination = "ns"
action = "url_list"
params = { list = "ctd" }
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


@pytest.fixture
def emu():
    return NetskopeTenant()


def sharer(store: FakeStore, emu: NetskopeTenant) -> Sharer:
    """A fresh Sharer with its own adapter instance: what a restarted daemon builds."""
    cfg = parse_config(CFG)
    sh = cfg.sharing["u"]
    client = httpx.AsyncClient(transport=httpx.MockTransport(emu))
    ns = NetskopeAdapter("ns", cfg.plugins["ns"].options, client)
    return Sharer("u", sh, cfg.rules["urls"], cfg.plugins["ns"], ns, store)


def states(store: FakeStore) -> dict[str, str]:
    return dict(
        store.conn.execute(
            "SELECT i.value, d.state || CASE WHEN d.staged THEN '+staged' ELSE '' END "
            "FROM delivery d JOIN indicator i ON i.id = d.iid"
        )
    )


def deployed(emu: NetskopeTenant) -> set[str]:
    lst = emu.url_list("ctd")
    return set(lst.applied) - {"cedefaultpush.io"} if lst else set()


async def test_failed_deploy_keeps_the_withdrawal_pending_and_the_next_pass_deploys(store, emu):
    """Deploy 503 after a withdrawal: not `retracted` in the ledger; the next pass deploys, the tenant stops it."""
    t = now()
    ingest(store.conn, "a", [s("http://gone.example/", "url"), s("http://kept.example/", "url")], now=t)
    sh = sharer(store, emu)
    await sh.share_once()
    assert deployed(emu) == {"http://gone.example/", "http://kept.example/"}
    ingest(store.conn, "a", [s("http://gone.example/", "url", retracted=True)], now=t + 1, fresh=False)
    emu.fail_deploy = [503]
    with pytest.raises(SourceUnavailable, match="deploy"):
        await sh.share_once()
    assert states(store)["http://gone.example/"] == "retract_pending+staged"
    assert "http://gone.example/" in deployed(emu)  # the tenant still enforces it
    res = await sh.share_once()
    assert res.applied and states(store)["http://gone.example/"] == "retracted"
    assert deployed(emu) == {"http://kept.example/"}
    assert len(emu.calls("PATCH")) == 2  # the withdrawal was not sent twice: only the deploy was repeated


async def test_a_push_is_shared_only_after_the_deploy(store, emu):
    """A failed deploy leaves pushed values pending (staged); they become `shared` when a later deploy succeeds."""
    ingest(store.conn, "a", [s("http://new.example/", "url")], now=now())
    emu.fail_deploy = [503]
    with pytest.raises(SourceUnavailable):
        await sharer(store, emu).share_once()
    assert states(store) == {"http://new.example/": "pending+staged"}
    assert (await store.ledger_counts("u"))["apply_pending"] is True
    await sharer(store, emu).share_once()  # a restarted daemon: a new adapter, the marker from the ledger
    assert states(store) == {"http://new.example/": "shared"} and deployed(emu) == {"http://new.example/"}
    assert len(emu.calls("PATCH")) == 1 and len(emu.calls("POST", "/api/v2/policy/urllist/deploy")) == 2
    assert (await store.ledger_counts("u"))["apply_pending"] is False


async def test_one_deploy_per_pass_however_many_batches(store, emu):
    """25,000 URLs go out in three batches of 10,000 and one deploy."""
    t = now()
    ingest(store.conn, "a", [s(f"http://h{i}.example/", "url") for i in range(25_000)], now=t)
    res = await sharer(store, emu).share_once()
    assert res.pushed == 25_000 and len(emu.calls("PATCH")) == 3 and emu.deploys == 1
    assert len(deployed(emu)) == 25_000


async def test_an_unchanged_pass_deploys_nothing(store, emu):
    """A pass with nothing to deliver and no apply owed makes no deploy call."""
    ingest(store.conn, "a", [s("http://x.example/", "url")], now=now())
    sh = sharer(store, emu)
    await sh.share_once()
    await sh.share_once()
    assert emu.deploys == 1


async def test_a_staged_value_deselected_before_the_deploy_is_withdrawn(store, emu):
    """Appended but not deployed, then no longer selected: it is withdrawn from the list before the deploy."""
    t = now()
    ingest(store.conn, "a", [s("http://brief.example/", "url")], now=t)
    emu.fail_deploy = [503]
    sh = sharer(store, emu)
    with pytest.raises(SourceUnavailable):
        await sh.share_once()
    ingest(store.conn, "a", [s("http://brief.example/", "url", retracted=True)], now=t + 1, fresh=False)
    await sh.share_once()
    assert states(store) == {"http://brief.example/": "retracted"} and deployed(emu) == set()


# --- a full-replace destination with an apply step ------------------------------------------------


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class PublishedList(FakeAdapter):
    """A full-replace destination whose list is live only once published (``apply``)."""

    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "list": ActionSpec(description="a list", mode="full", params=Params, needs_apply=True),
    }

    def __init__(self, name: str, config: Any, client: Any = None, *, fakes: Fakes | None = None) -> None:
        super().__init__(name, config, client, fakes=fakes)
        self.remote = self.fakes.remote(config.key)
        self.draft: list[str] = []

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        self.remote.calls.append(("replace", [i.value for i in items]))
        self.draft = [i.value for i in items]
        return PushResult()

    async def apply(self, action: str, params: Any) -> None:
        self.remote.calls.append(("apply", []))
        self.remote._maybe_fail()
        self.remote.items = {v: None for v in self.draft}  # type: ignore[misc]


async def test_full_list_is_recorded_only_after_it_was_published(store):
    """Full replace with an apply step: a failed publish records nothing; the next pass sends and publishes again."""
    fakes = Fakes()
    cfg = parse_config(
        '[plugins.a]\nadapter = "file"\npath = "x"\npull = false\n'
        '[plugins.pub]\nadapter = "tests.test_apply:PublishedList"\nkey = "pub"\npull = false\n'
        '[rules.all]\nfilter = "type = domain"\n'
        '[sharing.p]\nsources = ["a"]\nrule = "all"\ndestination = "pub"\naction = "list"\n'
    )
    adapter = fakes.adapter("pub", cfg.plugins["pub"])
    sh = Sharer("p", cfg.sharing["p"], cfg.rules["all"], cfg.plugins["pub"], adapter, store)
    ingest(store.conn, "a", [s("x.example")], now=now())
    remote = fakes.remote("pub")
    remote.errors = [SourceUnavailable("publish failed")]
    with pytest.raises(SourceUnavailable):
        await sh.share_once()
    assert states(store) == {} and (await store.list_hash("p"))[1] is None
    res = await sh.share_once()
    assert res.applied and states(store) == {"x.example": "shared"} and set(remote.items) == {"x.example"}
    assert [op for op, _ in remote.calls] == ["replace", "apply", "replace", "apply"]


def test_an_action_that_needs_apply_must_have_apply():
    """An adapter declaring `needs_apply` without implementing `apply` is refused when it loads."""

    class NoApply(Adapter):
        can_push = True
        ACTIONS = {"x": ActionSpec(description="x", mode="incremental", params=Params, needs_apply=True)}

    with pytest.raises(ConfigError, match="needs_apply"):
        checked("noapply", NoApply)


def test_migration_adds_staging_to_an_existing_ledger(tmp_path):
    """An existing ledger gains the staging columns; rows shared before get an unknown (0) expiry."""
    import sqlite3

    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for i, script in enumerate(schema.MIGRATIONS[:7]):
        for stmt in schema._statements(script):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {i + 1}")
    conn.execute("INSERT INTO sharing (id, name) VALUES (1, 's')")
    conn.execute("INSERT INTO delivery (shid, iid, state, updated_at) VALUES (1, 1, 'shared', 0), (1, 2, 'failed', 0)")
    conn.commit()
    conn.close()
    conn = store_sql.connect(path)
    try:
        rows = conn.execute("SELECT iid, staged, expires_at FROM delivery ORDER BY iid").fetchall()
        assert rows == [(1, 0, 0), (2, 0, None)]
        assert conn.execute("SELECT apply_pending FROM sharing").fetchone() == (0,)
    finally:
        conn.close()
