"""A reload changing a source's tags/reputation mid-pull: the resumed pull applies them to all it committed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.model import Adapter, Batch, PullContext, Sighting
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.fakestore import FakeStore
from tests.storeutil import show

BATCHES = [["a.example", "b.example"], ["c.example"]]


class TwoBatches(Adapter):
    """Two batches with a resume point between them; ``fail`` breaks the pull after the first."""

    can_pull = True

    def __init__(self, fail: bool = False) -> None:
        super().__init__("src", None)
        self.fail = fail
        self.seen_subs: list[dict | None] = []

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        self.seen_subs.append(ctx.sub_checkpoint)
        start = ctx.sub_checkpoint["next"] if ctx.sub_checkpoint else 0
        for i in range(start, len(BATCHES)):
            if self.fail and i == 1:
                raise SourceUnavailable("interrupted (the reload cancelled the actor)")
            last = i == len(BATCHES) - 1
            yield Batch(
                sightings=[Sighting(type="domain", value=v, tags=("feed-own",)) for v in BATCHES[i]],
                sub_checkpoint=None if last else {"next": i + 1},
                snapshot_end=last,
            )


def plugin(extra: str):
    cfg = parse_config(f'[plugins.src]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "k"\n{extra}')
    return cfg.plugins["src"]


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def pull(store: FakeStore, adapter: TwoBatches, extra: str) -> None:
    p = plugin(extra)
    await pull_once("src", p, adapter, store, AllowlistRef(), SourceStatus("src", p))


async def test_values_changed_mid_pull_reach_what_was_committed_before(store):
    """Committed with tags ["old"], reputation 3; resumed after a reload to ["new"], 7: every row ends new."""
    with pytest.raises(SourceUnavailable):
        await pull(store, TwoBatches(fail=True), 'tags = ["old", "kept"]\nreputation = 3\n')
    assert show(store.conn, "domain", "a.example")["tags"] == ["feed-own", "kept", "old"]
    resumed = TwoBatches()
    await pull(store, resumed, 'tags = ["new", "kept"]\nreputation = 7\n')
    assert resumed.seen_subs == [{"next": 1}]  # the adapter resumed and never saw ctd's own key
    for value in ("a.example", "b.example", "c.example"):
        ind = show(store.conn, "domain", value)
        assert ind["tags"] == ["feed-own", "kept", "new"] and ind["reputation"] == 7, value


async def test_a_resumed_pull_with_unchanged_values_rewrites_nothing(store):
    """Without a change of plugin-level values the resumed pull does not touch what was committed."""
    with pytest.raises(SourceUnavailable):
        await pull(store, TwoBatches(fail=True), 'tags = ["t"]\n')
    calls = []
    real = store.reapply_plugin_values

    async def spy(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw)
        return await real(*args, **kw)

    store.reapply_plugin_values = spy  # type: ignore[method-assign]
    await pull(store, TwoBatches(), 'tags = ["t"]\n')
    assert calls == [] and show(store.conn, "domain", "a.example")["tags"] == ["feed-own", "t"]


async def test_a_removed_reputation_override_keeps_what_was_committed(store):
    """A removed override cannot restore a feed's own reputation: committed rows keep it until re-reported."""
    with pytest.raises(SourceUnavailable):
        await pull(store, TwoBatches(fail=True), 'tags = ["old"]\nreputation = 9\n')
    await pull(store, TwoBatches(), "")
    a, c = show(store.conn, "domain", "a.example"), show(store.conn, "domain", "c.example")
    assert a["tags"] == ["feed-own"] and a["reputation"] == 9
    assert c["reputation"] == 5
