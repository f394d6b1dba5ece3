"""The false-positive guard (ctd.guard): config keys, loading, and what a warning-list hit does in the store."""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest
import trio

from ctd import warninglists as wl
from ctd.config import parse_config
from ctd.errors import ConfigError
from ctd.guard import Guard, load_guard, load_lists
from ctd.model import iso
from ctd.store import guard as store_guard
from ctd.store import sql as store_sql
from ctd.store.schema import MIGRATIONS, migrate
from tests.storeutil import DAY, NOW, ingest, s, show

FLAG = {("domain", "google.com"): "tranco10k", ("ipv4", "8.8.8.8"): "public-dns-v4"}


def flags(t: str, v: str) -> str | None:
    return FLAG.get((t, v))


def plugin_toml(adapter: str = "file", extra: str = "") -> str:
    return f'[plugins.p]\nadapter = "{adapter}"\npath = "x.txt"\n{extra}\n'


@pytest.fixture
def conn(tmp_path):
    c = store_sql.connect(str(tmp_path / "ctd.db"))
    yield c
    c.close()


class TestConfig:
    def test_default_is_off_for_other_adapters(self):
        """A file (vendor-style) source has no guard unless its config sets one."""
        assert parse_config(plugin_toml()).plugins["p"].warninglists == "off"

    def test_names_are_checked(self):
        """An unknown list name fails validation with its location."""
        with pytest.raises(ConfigError, match=r"unknown warning lists \['nope'\].*plugins\.p\.warninglists"):
            parse_config(plugin_toml(extra='warninglists = ["rfc1918", "nope"]'))

    def test_empty_list_is_refused(self):
        """An empty list is refused: "off" says it plainly."""
        with pytest.raises(ConfigError, match='"off"'):
            parse_config(plugin_toml(extra="warninglists = []"))

    def test_bad_action(self):
        """warninglist_action is "inactive" or "tag"."""
        with pytest.raises(ConfigError, match="warninglist_action"):
            parse_config(plugin_toml(extra='warninglist_action = "drop"'))

    def test_missing_extra_fails_validation(self, monkeypatch):
        """Without the optional extra a config asking for lists fails to load, saying how to install or turn off."""
        real = importlib.util.find_spec
        monkeypatch.setattr(
            wl.importlib.util, "find_spec", lambda name, *a: None if name == "pymispwarninglists" else real(name, *a)
        )
        with pytest.raises(ConfigError, match=r"pip install 'ctd\[warninglists\]'.*\"off\""):
            parse_config(plugin_toml(extra='warninglists = "default"'))
        assert parse_config(plugin_toml()).plugins["p"].warninglists == "off"  # off needs no extra


class TestLoading:
    async def test_same_selection_shares_one_copy(self):
        """Two plugins with the same selection share one loaded copy; another selection gets its own."""
        cfg = parse_config(
            plugin_toml(extra='warninglists = ["rfc1918", "rfc5735"]')
            + '[plugins.q]\nadapter = "file"\npath = "y.txt"\nwarninglists = ["rfc1918", "rfc5735"]\n'
            + '[plugins.r]\nadapter = "file"\npath = "z.txt"\nwarninglists = ["rfc5735"]\n'
        )
        a, b, c = [await load_guard(cfg.plugins[n]) for n in ("p", "q", "r")]
        assert a.lists is b.lists and a.lists is not c.lists
        assert a.match("ipv4", "10.0.0.1") == "rfc1918" and c.match("ipv4", "10.0.0.1") == "rfc5735"

    async def test_concurrent_loads_read_once(self, monkeypatch):
        """Actors starting together load a selection once (the others wait for that copy)."""
        calls = []
        real = wl.WarningLists.load

        def counting(names):
            calls.append(names)
            return real(names)

        monkeypatch.setattr(wl.WarningLists, "load", counting)
        wl._load_cached.cache_clear()
        results = []

        async def one():
            results.append(await trio.to_thread.run_sync(load_lists, ["multicast"]))

        async with trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(one)
        assert len({id(r) for r in results}) == 1 and calls == [["multicast"]]

    def test_signature_names_lists_versions_and_action(self):
        """The signature changes with the lists, their versions and the action; off is "off"."""
        lists = load_lists(["rfc1918"])
        (info,) = lists.info()
        assert Guard(lists, "tag").signature == f"rfc1918@{info.version};tag"
        assert Guard(lists, "inactive").signature != Guard(lists, "tag").signature
        assert Guard(None, "inactive").signature == "off"


class TestStore:
    def test_hit_is_stored_flagged_and_inactive(self, conn):
        """A held hit is stored as reported, flagged with the list's name, and inactive; a miss is active."""
        ingest(conn, "news", [s("google.com"), s("evil.example")], warninglisted=flags)
        hit, miss = show(conn, "domain", "google.com"), show(conn, "domain", "evil.example")
        assert (hit["active"], hit["warninglist"], hit["sources"][0]["warninglist_held"]) == (False, "tranco10k", True)
        assert (miss["active"], miss["warninglist"]) == (True, "")

    def test_tag_action_keeps_it_active_and_tagged(self, conn):
        """Under the tag action a hit is active, flagged and tagged warninglist:NAME."""
        ingest(conn, "news", [s("google.com", tags=("apt",))], warninglisted=flags, warninglist_tag=True)
        ind = show(conn, "domain", "google.com")
        assert (ind["active"], ind["warninglist"]) == (True, "tranco10k")
        assert ind["tags"] == ["apt", "warninglist:tranco10k"]

    def test_unguarded_source_makes_it_active(self, conn):
        """The guard holds its own source's report only: a source without a guard still makes the value active."""
        ingest(conn, "news", [s("8.8.8.8", "ipv4")], warninglisted=flags)
        assert not show(conn, "ipv4", "8.8.8.8")["active"]
        ingest(conn, "vendor", [s("8.8.8.8", "ipv4")])
        ind = show(conn, "ipv4", "8.8.8.8")
        assert (ind["active"], ind["warninglist"]) == (True, "public-dns-v4")

    def test_held_report_does_not_extend_activity(self, conn):
        """A held report's expiry does not keep the value active once the unguarded source's entry expires."""
        ingest(conn, "vendor", [s("8.8.8.8", "ipv4")], aging_days=10)
        ingest(conn, "news", [s("8.8.8.8", "ipv4")], warninglisted=flags, aging_days=90)
        assert show(conn, "ipv4", "8.8.8.8")["expires_at"] == iso(NOW + 10 * DAY)
        assert store_sql.expire(conn, NOW + 11 * DAY) == 1
        assert not show(conn, "ipv4", "8.8.8.8")["active"]

    def test_all_held_shows_its_own_expiry(self, conn):
        """A value only held reports mention keeps their expiry for display."""
        ingest(conn, "news", [s("google.com")], warninglisted=flags, aging_days=30)
        assert show(conn, "domain", "google.com")["expires_at"] == iso(NOW + 30 * DAY)

    def test_re_report_follows_the_current_verdict(self, conn):
        """A re-report carries the verdict of the guard that checked it (a list that dropped a value frees it)."""
        ingest(conn, "news", [s("google.com")], warninglisted=flags)
        ingest(conn, "news", [s("google.com")], fresh=False)
        ind = show(conn, "domain", "google.com")
        assert (ind["active"], ind["warninglist"]) == (True, "")

    def test_apply_guard_reflags_stored_reports(self, conn):
        """A changed guard re-flags what the source reported before: held -> tagged -> off; same signature: no-op."""
        ingest(conn, "news", [s("google.com"), s("evil.example")], warninglisted=flags)
        assert store_guard.apply_guard(conn, "news", "lists;inactive", flags, False, NOW) == 0  # flagged at ingest
        assert store_guard.apply_guard(conn, "news", "lists;inactive", flags, False, NOW) is None
        assert store_guard.apply_guard(conn, "news", "lists;tag", flags, True, NOW) == 1
        ind = show(conn, "domain", "google.com")
        assert (ind["active"], ind["tags"]) == (True, ["warninglist:tranco10k"])
        assert store_guard.apply_guard(conn, "news", "off", None, False, NOW) == 1
        ind = show(conn, "domain", "google.com")
        assert (ind["active"], ind["warninglist"], ind["tags"]) == (True, "", [])

    def test_apply_guard_turned_on_holds_old_reports(self, conn):
        """Turning a guard on for a source holds its benign values already stored."""
        ingest(conn, "vendor", [s("google.com"), s("evil.example")])
        assert store_guard.apply_guard(conn, "vendor", "lists;inactive", flags, False, NOW) == 1
        assert not show(conn, "domain", "google.com")["active"]
        assert show(conn, "domain", "evil.example")["active"]

    def test_migration_from_version_5(self, tmp_path):
        """A database at schema 5 migrates: reports unflagged, indicators keep their activity."""
        path = str(tmp_path / "old.db")
        raw = sqlite3.connect(path, isolation_level=None)
        for script in MIGRATIONS[:5]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 5")
        raw.execute("INSERT INTO source (name) VALUES ('old')")
        raw.execute("INSERT INTO indicator (type, value, active, nsrc) VALUES ('domain', 'a.example', 1, 1)")
        raw.execute(
            "INSERT INTO sighting (iid, sid, reputation, severity, tags, comments, reference, gen) "
            "VALUES (1, 1, 5, 0, '[]', '', '', 1)"
        )
        assert migrate(raw) == len(MIGRATIONS) >= 6
        assert raw.execute("SELECT active, warninglist FROM indicator").fetchone() == (1, "")
        assert raw.execute("SELECT warninglist, wl_hold FROM sighting").fetchone() == ("", 0)
        assert raw.execute("SELECT guard FROM source").fetchone() == (None,)
        raw.close()
