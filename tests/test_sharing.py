"""Sharing passes: rules, ledger, incremental and full-replace delivery, limits, retraction."""

from __future__ import annotations

import pytest

from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.model import now
from ctd.sharing.actor import Sharer
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.storeutil import DAY, ingest, s

SRC = 'adapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "unused"\npull = false\n'
BASE = f"""
[plugins.a]
{SRC}
[plugins.b]
{SRC}
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "{{key}}"
pull = false
[plugins.full]
adapter = "tests.fake_adapters:FullDestination"
key = "{{key}}-full"
pull = false
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


@pytest.fixture
def fakes():
    """This test's fake destinations: the incremental one's fakes under KEY, the full one's under KEY-full."""
    return Fakes()


KEY = "dest"


def sharer(store, fakes, text, name="s"):
    cfg = parse_config(BASE.replace("{key}", KEY) + text)
    sh = cfg.sharing[name]
    dest = cfg.plugins[sh.destination]
    return Sharer(name, sh, cfg.rules[sh.rule], dest, fakes.adapter(sh.destination, dest), store)


def share_cfg(rule="type = url", exceptions=(), sources='["a"]', dest="dest", action="add", params="{}", extra=""):
    exc = ", ".join(f"'{e}'" for e in exceptions)
    return (
        f'[rules.r]\nfilter = "{rule}"\nexceptions = [{exc}]\n{extra}'
        f'[sharing.s]\nsources = {sources}\nrule = "r"\ndestination = "{dest}"\n'
        f'action = "{action}"\nparams = {params}\n'
    )


def held(fakes, key=KEY):
    return set(fakes.remote(key).items)


def T():
    return now()


class TestRules:
    async def test_seed_example_urls_except_goodurl(self, store, fakes):
        """Every URL is shared except goodURL.com, even when several sources report it."""
        t = T()
        for src in ("a", "b"):
            ingest(store.conn, src, [s("http://goodurl.com/", "url"), s(f"http://bad{src}.example/x", "url")], now=t)
        sh = sharer(store, fakes, share_cfg(exceptions=['value ~ "*goodurl.com*"'], sources='["a", "b"]'))
        await sh.share_once()
        assert held(fakes) == {"http://bada.example/x", "http://badb.example/x"}

    async def test_seed_example_hashes_except_one(self, store, fakes):
        """MD5 and SHA256 are shared except one named hash; other types are not."""
        keep, skip = "a" * 32, "b" * 32
        ingest(store.conn, "a", [s(keep, "md5"), s(skip, "md5"), s("c" * 64, "sha256"), s("d" * 40, "sha1")], now=T())
        sh = sharer(store, fakes, share_cfg(rule="type in (md5, sha256)", exceptions=[f'value = "{skip}"']))
        await sh.share_once()
        assert held(fakes) == {keep, "c" * 64}

    async def test_muted_rule_pauses(self, store, fakes):
        """A rule muted until a future time shares nothing; muted in the past it shares."""
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T())
        res = await sharer(store, fakes, share_cfg(extra="muted_until = 2999-01-01T00:00:00Z\n")).share_once()
        assert res.muted and held(fakes) == set()
        await sharer(store, fakes, share_cfg(extra="muted_until = 2000-01-01T00:00:00Z\n")).share_once()
        assert held(fakes) == {"http://x.example/"}

    async def test_only_configured_sources(self, store, fakes):
        """Only IoCs reported by the configuration's sources are shared."""
        ingest(store.conn, "a", [s("http://a.example/", "url")], now=T())
        ingest(store.conn, "b", [s("http://b.example/", "url")], now=T())
        await sharer(store, fakes, share_cfg()).share_once()
        assert held(fakes) == {"http://a.example/"}


class TestLedger:
    async def test_new_config_shares_existing(self, store, fakes):
        """A new sharing configuration shares the matching IoCs already in the store."""
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url") for i in range(7)], now=T())
        res = await sharer(store, fakes, share_cfg()).share_once()
        assert res.pushed == 7 and len(held(fakes)) == 7

    async def test_resighting_does_not_repush(self, store, fakes):
        """A re-sighting that changes nothing is not pushed again."""
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T())
        sh = sharer(store, fakes, share_cfg())
        await sh.share_once()
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T() + 60)
        res = await sh.share_once()
        assert res.pushed == 0
        assert fakes.remote(KEY).calls == [("push", ["http://x.example/"])]

    async def test_changed_metadata_repushes(self, store, fakes):
        """A change the destination would see (severity) is pushed again."""
        ingest(store.conn, "a", [s("http://x.example/", "url", severity="low")], now=T())
        sh = sharer(store, fakes, share_cfg())
        await sh.share_once()
        ingest(store.conn, "a", [s("http://x.example/", "url", severity="high", last_seen=T() + 5)], now=T() + 5)
        res = await sh.share_once()
        assert res.pushed == 1 and fakes.remote(KEY).items["http://x.example/"].severity == "high"

    async def test_rejection_marks_failed_rest_shared(self, store, fakes):
        """A value the destination rejects is failed with its reason; the others are shared."""
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url") for i in range(5)], now=T())
        fakes.remote(KEY).reject["http://2.example/"] = "invalid host"
        res = await sharer(store, fakes, share_cfg()).share_once()
        assert res.pushed == 4 and res.rejected == 1
        counts = (await store.ledger_counts("s"))["counts"]
        assert counts["shared"] == 4 and counts["failed"] == 1
        [row] = await store.ledger_rows("s", ("failed",), 10)
        assert row["value"] == "http://2.example/" and row["error"] == "invalid host"

    async def test_failure_marks_nothing_and_resumes(self, store, fakes):
        """A failing destination leaves IoCs pending (not shared); the next pass delivers them."""
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url") for i in range(5)], now=T())
        sh = sharer(store, fakes, share_cfg())
        fakes.remote(KEY).errors.append(SourceUnavailable("503"))
        with pytest.raises(SourceUnavailable):
            await sh.share_once()
        counts = (await store.ledger_counts("s"))["counts"]
        assert counts["shared"] == 0 and counts["pending"] == 5
        await sh.share_once()
        assert (await store.ledger_counts("s"))["counts"]["shared"] == 5

    async def test_resumable_after_restart(self, store, fakes):
        """Pending deliveries survive a restart (a new actor on the same database)."""
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url") for i in range(5)], now=T())
        fakes.remote(KEY).errors.append(SourceUnavailable("down"))
        with pytest.raises(SourceUnavailable):
            await sharer(store, fakes, share_cfg()).share_once()
        res = await sharer(store, fakes, share_cfg()).share_once()  # "after restart"
        assert res.pushed == 5

    async def test_sync_days_reshares_recent(self, store, fakes):
        """`sharing sync --days N` re-pushes matching IoCs last seen in the past N days only."""
        t = T()
        ingest(store.conn, "a", [s("http://old.example/", "url", last_seen=t - 10 * DAY)], now=t)
        ingest(store.conn, "a", [s("http://new.example/", "url", last_seen=t)], now=t)
        sh = sharer(store, fakes, share_cfg())
        await sh.share_once()
        await store.resync("s", since=t - 3 * DAY)
        res = await sh.share_once()
        assert res.pushed == 1
        assert fakes.remote(KEY).calls[-1] == ("push", ["http://new.example/"])


class TestLoops:
    async def test_never_pushed_back_to_reporter(self, store, fakes):
        """An IoC is not pushed to the destination plugin that reported it itself."""
        ingest(store.conn, "a", [s("http://x.example/", "url"), s("http://y.example/", "url")], now=T())
        ingest(store.conn, "dest", [s("http://x.example/", "url")], now=T())
        await sharer(store, fakes, share_cfg()).share_once()
        assert held(fakes) == {"http://y.example/"}


class TestDestinations:
    async def test_incremental_gets_additions_and_deletions(self, store, fakes):
        """An incremental destination receives new IoCs and deletes for withdrawn ones."""
        sh = sharer(store, fakes, share_cfg())
        ingest(
            store.conn, "a", [s("http://1.example/", "url"), s("http://2.example/", "url")], now=T(), snapshot_end=True
        )
        await sh.share_once()
        ingest(
            store.conn, "a", [s("http://1.example/", "url"), s("http://3.example/", "url")], now=T(), snapshot_end=True
        )
        res = await sh.share_once()
        assert (res.pushed, res.retracted) == (1, 1)
        calls = fakes.remote(KEY).calls
        assert ("retract", ["http://2.example/"]) in calls and ("push", ["http://3.example/"]) in calls
        assert held(fakes) == {"http://1.example/", "http://3.example/"}

    async def test_full_replace_only_when_changed(self, store, fakes):
        """A full-replace destination gets the whole list, and only when it changed."""
        sh = sharer(store, fakes, share_cfg(dest="full", action="replace"))
        ingest(store.conn, "a", [s("http://1.example/", "url")], now=T())
        await sh.share_once()
        r2 = await sh.share_once()
        assert r2.unchanged
        ingest(store.conn, "a", [s("http://2.example/", "url")], now=T())
        await sh.share_once()
        calls = fakes.remote(KEY + "-full").calls
        assert [sorted(v) for _, v in calls] == [["http://1.example/"], ["http://1.example/", "http://2.example/"]]

    async def test_limits_newest_first_rest_unshared(self, store, fakes):
        """Over a destination limit the newest are shared; the rest is recorded as unshared: over limit."""
        t = T()
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url", last_seen=t - i) for i in range(5)], now=t)
        res = await sharer(store, fakes, share_cfg(params="{ max_entries = 3 }")).share_once()
        assert held(fakes) == {"http://0.example/", "http://1.example/", "http://2.example/"}
        assert res.unshared == 2
        rows = await store.ledger_rows("s", ("unshared",), 10)
        assert {r["value"] for r in rows} == {"http://3.example/", "http://4.example/"}
        assert all(r["error"] == "over limit" for r in rows)

    async def test_byte_limit(self, store, fakes):
        """A byte limit (serialised size) is honoured newest-first too."""
        t = T()
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url", last_seen=t - i) for i in range(5)], now=t)
        # each entry: len("http://0.example/") = 17 bytes + 1 overhead
        await sharer(store, fakes, share_cfg(params="{ max_bytes = 40 }")).share_once()
        assert held(fakes) == {"http://0.example/", "http://1.example/"}

    async def test_newer_ioc_displaces_older_over_limit(self, store, fakes):
        """When a newer IoC arrives at the limit, the oldest shared one is withdrawn and marked unshared."""
        t = T()
        sh = sharer(store, fakes, share_cfg(params="{ max_entries = 2 }"))
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url", last_seen=t - 10 * i) for i in range(2)], now=t)
        await sh.share_once()
        ingest(store.conn, "a", [s("http://new.example/", "url", last_seen=t + 5)], now=t + 5)
        await sh.share_once()
        assert held(fakes) == {"http://new.example/", "http://0.example/"}
        assert [r["value"] for r in await store.ledger_rows("s", ("unshared",), 10)] == ["http://1.example/"]

    async def test_unchanged_full_list_still_records_over_limit(self, store, fakes):
        """An older IoC that does not fit leaves the full list unchanged but is recorded as unshared."""
        t = T()
        sh = sharer(store, fakes, share_cfg(dest="full", action="replace", params="{ max_entries = 2 }"))
        ingest(store.conn, "a", [s(f"http://{i}.example/", "url", last_seen=t - i) for i in range(2)], now=t)
        await sh.share_once()
        ingest(store.conn, "a", [s("http://old.example/", "url", last_seen=t - 3600)], now=t)
        res = await sh.share_once()
        assert res.unchanged and res.unshared == 1
        assert [r["value"] for r in await store.ledger_rows("s", ("unshared",), 10)] == ["http://old.example/"]
        assert len(fakes.remote(KEY + "-full").calls) == 1


class TestRetraction:
    async def _shared(self, store, fakes, **kw):
        sh = sharer(store, fakes, share_cfg(**kw))
        ingest(
            store.conn,
            "a",
            [s("http://x.example/", "url"), s("http://y.example/", "url")],
            now=T(),
            aging_days=1,
            snapshot_end=True,
        )
        await sh.share_once()
        assert held(fakes) == {"http://x.example/", "http://y.example/"}
        return sh

    async def test_expired_withdrawn(self, store, fakes):
        """An IoC that expires is withdrawn from the destination."""
        sh = await self._shared(store, fakes)
        await store.expire(T() + 2 * DAY)
        res = await sh.share_once()
        assert res.retracted == 2 and held(fakes) == set()

    async def test_retracted_by_all_sources_withdrawn(self, store, fakes):
        """An IoC retracted by every source that reported it is withdrawn."""
        sh = await self._shared(store, fakes)
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T(), snapshot_end=True)
        await sh.share_once()
        assert held(fakes) == {"http://x.example/"}

    async def test_no_longer_matching_withdrawn(self, store, fakes):
        """An IoC that stops matching the rule is withdrawn (here: a new exception)."""
        await self._shared(store, fakes)
        sh2 = sharer(store, fakes, share_cfg(exceptions=['value = "http://y.example/"']))
        await sh2.share_once()
        assert held(fakes) == {"http://x.example/"}

    async def test_allowlisted_withdrawn(self, store, fakes):
        """An IoC that becomes allow-listed is withdrawn."""
        sh = await self._shared(store, fakes)
        await store.reapply_allowlist(lambda t, v: v == "http://y.example/", T())
        await sh.share_once()
        assert held(fakes) == {"http://x.example/"}

    async def test_full_replace_withdraws_by_absence(self, store, fakes):
        """A full-replace destination's next list simply lacks the withdrawn IoC."""
        sh = sharer(store, fakes, share_cfg(dest="full", action="replace"))
        ingest(
            store.conn, "a", [s("http://x.example/", "url"), s("http://y.example/", "url")], now=T(), snapshot_end=True
        )
        await sh.share_once()
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T(), snapshot_end=True)
        res = await sh.share_once()
        assert held(fakes, KEY + "-full") == {"http://x.example/"} and res.retracted == 1
        assert (await store.ledger_counts("s"))["counts"]["retracted"] == 1


class TestShowDeliveries:
    async def test_indicator_show_lists_delivery_state(self, store, fakes):
        """indicators show includes each sharing configuration's delivery state."""
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T())
        await sharer(store, fakes, share_cfg()).share_once()
        [ind] = await store.show([("url", "http://x.example/")], "x")
        assert ind["deliveries"][0]["sharing"] == "s" and ind["deliveries"][0]["state"] == "shared"


class TestFileDestination:
    async def test_missing_list_file_is_rewritten(self, store, fakes, tmp_path):
        """A full-replace list file that was deleted is written again even though nothing changed."""
        out = tmp_path / "urls.txt"
        text = '[plugins.lists]\nadapter = "file"\npull = false\n' + share_cfg(
            dest="lists", action="write", params=f'{{ path = "{out}" }}'
        )
        sh = sharer(store, fakes, text)
        ingest(store.conn, "a", [s("http://x.example/", "url")], now=T())
        await sh.share_once()
        assert out.read_text() == "http://x.example/\n"
        assert (await sh.share_once()).unchanged
        out.unlink()
        res = await sh.share_once()
        assert not res.unchanged and out.read_text() == "http://x.example/\n"
