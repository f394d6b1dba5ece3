"""The ``netskope`` adapter against the tenant emulator: config, pull, push, limits, errors, no loops."""

from __future__ import annotations

import time

import httpx
import pytest

from ctd.adapters.netskope.adapter import NetskopeAdapter
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext, ShareItem, Sighting, now
from ctd.plugins import open_adapter
from ctd.sharing.actor import Sharer
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.emulators.netskope import NetskopeTenant, serve_on_localhost
from tests.exchange import Exchange
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

NOW = 1_800_000_000
TENANT = """
[tenants.prod]
url = "https://acme.goskope.com"
token = "v2-secret"
v1_token = "v1-secret"
"""
PLUGIN = '[plugins.ns]\nadapter = "netskope"\ntenant = "prod"\n'


def config(extra: str = "", plugin: str = PLUGIN, tenant: str = TENANT):
    return parse_config(tenant + plugin + extra)


def adapter(emu: NetskopeTenant, cfg=None, name: str = "ns") -> NetskopeAdapter:
    cfg = cfg or config()
    return NetskopeAdapter(name, cfg.plugins[name].options, httpx.AsyncClient(transport=httpx.MockTransport(emu)))


def item(value: str, typ: str = "url") -> ShareItem:
    return ShareItem(
        type=typ,
        value=value,
        severity="high",
        reputation=5,
        tags=(),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("a",),
    )


def url_params(**kw):
    return NetskopeAdapter.ACTIONS["url_list"].params(**{"list": "ctd-urls", **kw})


def hash_params(**kw):
    return NetskopeAdapter.ACTIONS["file_hash_list"].params(**{"list": "ctd-hashes", **kw})


async def pull(a: NetskopeAdapter, *, since: int = NOW - 7200, cursor=None, sub=None, now_: int = NOW):
    ctx = PullContext(since=since, now=now_, cursor=cursor, sub_checkpoint=sub)
    return [b async for b in a.pull(ctx)]


def values(batches) -> list[str]:
    return [x.value for b in batches for x in b.sightings]


@pytest.fixture
def emu():
    return NetskopeTenant(now=NOW, page_size=2)


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def malsites(emu: NetskopeTenant, n: int, start: int = NOW - 3000) -> list[str]:
    for i in range(n):
        emu.add_alert("malsite", url=f"http://m{i}.example/x", timestamp=start + i, severity="high")
    return [f"http://m{i}.example/x" for i in range(n)]


# --- config ---------------------------------------------------------------------------


def test_tenant_settings_bound_with_secrets_from_files(tmp_path):
    """A plugin names a tenant; its table is validated once and secrets come from files."""
    (tmp_path / "v2").write_text("from-file\n")
    cfg = config(
        tenant=f'[tenants.prod]\nurl = "https://acme.goskope.com"\ntoken_file = "{tmp_path}/v2"\n'
        'proxy = "http://proxy.internal:3128"\n'
    )
    t = cfg.plugins["ns"].options.resolved_tenant
    assert (t.url, t.token, t.v1_token, t.proxy) == (
        "https://acme.goskope.com",
        "from-file",
        None,
        "http://proxy.internal:3128",
    )


def test_unknown_tenant_is_a_config_error_naming_it():
    """``tenant = "nope"`` without a ``[tenants.nope]`` table is rejected, naming the tenant."""
    with pytest.raises(ConfigError, match="unknown tenant 'nope'") as exc:
        config(plugin='[plugins.ns]\nadapter = "netskope"\ntenant = "nope"\n')
    assert exc.value.location == "$.plugins.ns"


def test_invalid_tenant_table_is_located():
    """A tenant table with a missing or unknown key is an error at ``$.tenants.NAME``."""
    with pytest.raises(ConfigError) as exc:
        config(tenant='[tenants.prod]\nurl = "https://acme.goskope.com"\n')
    assert exc.value.location.startswith("$.tenants.prod")
    with pytest.raises(ConfigError) as exc:
        config(tenant=TENANT + 'colour = "red"\n')
    assert exc.value.location.startswith("$.tenants.prod")


def test_resolved_tenant_cannot_be_set_in_the_plugin():
    """The bound tenant is filled in by ctd only."""
    with pytest.raises(ConfigError, match="resolved_tenant"):
        config(plugin=PLUGIN + 'resolved_tenant = { url = "https://x.example", token = "t" }\n')


def test_pulling_plugin_needs_alert_types():
    """A pulling plugin with no alert types is a config error; a push-only one is fine."""
    with pytest.raises(ConfigError, match="alert_types is empty"):
        config(plugin=PLUGIN + "alert_types = []\n")
    assert config(plugin=PLUGIN + "alert_types = []\npull = false\n").plugins["ns"].pull is False


async def test_daemon_client_comes_from_the_tenant_settings():
    """The daemon's client for the plugin is built from the tenant's connection keys."""
    cfg = config()
    async with open_adapter("ns", cfg.plugins["ns"]) as a:
        assert isinstance(a, NetskopeAdapter)
        assert isinstance(a.client, httpx.AsyncClient) and a.api.base == "https://acme.goskope.com"


SHARE = """
[plugins.a]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[rules.urls]
filter = "type in (url, domain, hostname, ipv4, ipv6)"
[rules.hashes]
filter = "type in (md5, sha256)"
"""


def sharing(name: str, action: str, params: str, rule: str = "urls") -> str:
    return (
        f'[sharing.{name}]\nsources = ["a"]\nrule = "{rule}"\ndestination = "ns"\n'
        f'action = "{action}"\nparams = {params}\n'
    )


def test_two_sharings_writing_one_list_is_a_config_error():
    """Two sharing configurations writing the same URL list would overwrite each other."""
    with pytest.raises(ConfigError, match="both write 'urllist:blocked'"):
        config(
            SHARE
            + sharing("one", "url_list", '{ list = "blocked" }')
            + sharing("two", "url_list", '{ list = "blocked", type = "regex" }')
        )


def test_url_list_and_hash_list_of_the_same_name_are_different_targets():
    """A URL list and a file hash list may share a name."""
    cfg = config(
        SHARE
        + sharing("u", "url_list", '{ list = "ctd" }')
        + sharing("h", "file_hash_list", '{ list = "ctd" }', rule="hashes")
    )
    assert set(cfg.sharing) == {"u", "h"}


def test_limits_above_the_tenant_caps_are_rejected():
    """``max_bytes`` beyond 7 MB for a URL list is a config error at the param."""
    with pytest.raises(ConfigError) as exc:
        config(SHARE + sharing("u", "url_list", '{ list = "x", max_bytes = 8000000 }'))
    assert exc.value.location == "$.sharing.u.params.max_bytes"


# --- pull -----------------------------------------------------------------------------


async def test_first_pull_seeks_the_initial_range_then_pages_with_next(emu):
    """The first pull seeks to ``since`` (now - initial range) and pages with ``next`` until caught up."""
    urls = malsites(emu, 5)
    emu.add_alert("malware", md5="a" * 32, sha256="b" * 64, timestamp=NOW - 100)
    batches = await pull(adapter(emu), since=NOW - 7200)
    assert values(batches) == ["a" * 32, "b" * 64, *urls]
    ops = emu.operations("malsite")
    assert ops[0] == str(NOW - 7200) and set(ops[1:]) == {"next"}
    assert batches[-1].sub_checkpoint == {"index": "ctd_ns", "type": "malsite", "seek": None}
    assert {b.cursor["index"] for b in batches if b.cursor} == {"ctd_ns"}


async def test_later_pull_continues_with_next(emu):
    """With the iterator started (cursor), a pull asks for ``next``, not a new seek."""
    a = adapter(emu)
    malsites(emu, 1)
    first = await pull(a)
    cursor = [b.cursor for b in first if b.cursor][-1]
    emu._now = NOW + 100
    emu.add_alert("malsite", url="http://later.example/", timestamp=NOW + 50)
    second = await pull(a, cursor=cursor, now_=NOW + 100)
    assert values(second) == ["http://later.example/"]
    assert emu.operations("malsite")[-2:] == ["next", "next"]


async def test_position_is_committed_before_the_iterator_moves(emu):
    """Each pull first yields an empty batch whose sub-checkpoint records the operation about to be sent."""
    malsites(emu, 1)
    batches = await pull(adapter(emu))
    markers = [b for b in batches if not b.sightings]
    assert [m.sub_checkpoint["type"] for m in markers] == ["malware", "malsite"]
    assert markers[0].sub_checkpoint["seek"] == NOW - 7200


async def test_failed_pull_resumes_with_resend_and_loses_no_page(emu):
    """A page fetched but not committed is fetched again with ``resend`` when the pull resumes."""
    urls = malsites(emu, 6)
    a = adapter(emu, config(plugin=PLUGIN + 'alert_types = ["malsite"]\n'))
    committed = None
    gen = a.pull(PullContext(since=NOW - 7200, now=NOW))
    async for b in gen:
        if values([b]) == urls[2:4]:
            break  # fetched, never committed: the daemon died here
        committed = b.sub_checkpoint
    await gen.aclose()
    before = len(emu.operations("malsite"))
    resumed = await pull(a, sub=committed, cursor={"index": "ctd_ns", "started": ["malsite"]})
    assert values(resumed) == urls[2:]
    assert emu.operations("malsite")[before:][:2] == ["resend", "next"]


async def test_interrupted_seek_is_repeated(emu):
    """If the pull stopped right after committing a seek, the resume sends the same epoch again."""
    urls = malsites(emu, 2)
    a = adapter(emu, config(plugin=PLUGIN + 'alert_types = ["malsite"]\n'))
    sub = {"index": "ctd_ns", "type": "malsite", "seek": NOW - 7200}
    assert values(await pull(a, sub=sub)) == urls
    assert emu.operations("malsite")[0] == str(NOW - 7200)


async def test_quiet_windows_are_crossed_in_one_pull(emu):
    """Empty hour windows far behind "now" do not end the pull; alerts after them still arrive."""
    emu.add_alert("malsite", url="http://old.example/", timestamp=NOW - 86000)
    emu.add_alert("malsite", url="http://new.example/", timestamp=NOW - 100)
    batches = await pull(adapter(emu), since=NOW - 86400)
    assert values(batches) == ["http://old.example/", "http://new.example/"]


async def test_max_pages_bounds_one_pull(emu):
    """``max_pages`` ends a long pull early; the next pull continues with ``next``."""
    urls = malsites(emu, 6)
    a = adapter(emu, config(plugin=PLUGIN + 'alert_types = ["malsite"]\nmax_pages = 2\n'))
    first = await pull(a, since=NOW - 3600)
    second = await pull(a, cursor={"index": "ctd_ns", "started": ["malsite"]})
    assert values(first) == urls[:4] and values(second) == urls[4:]


async def test_index_is_unique_per_plugin_or_configured(emu):
    """Two plugins on one tenant use two iterator indexes; ``iterator_index`` overrides the default."""
    cfg = config(plugin=PLUGIN + '[plugins.ns2]\nadapter = "netskope"\ntenant = "prod"\niterator_index = "siem_x"\n')
    await pull(adapter(emu, cfg, "ns"))
    await pull(adapter(emu, cfg, "ns2"))
    assert {q["index"] for _, _, q in emu.calls("GET", "/api/v2/events")} == {"ctd_ns", "siem_x"}


async def test_replies_are_gzip_and_decoded(emu):
    """The tenant compresses export pages when asked; the adapter reads them transparently."""
    malsites(emu, 1)
    async with httpx.AsyncClient(transport=httpx.MockTransport(emu)) as raw:
        resp = await raw.get(
            "https://acme.goskope.com/api/v2/events/dataexport/alerts/malsite",
            params={"index": "probe", "operation": "head"},
            headers={"Netskope-Api-Token": "v2-secret"},
        )
    assert resp.headers["content-encoding"] == "gzip" and resp.json()["ok"] == 1
    assert values(await pull(adapter(emu))) == ["http://m0.example/x"]


async def test_rate_limit_raises_with_the_reset_hint(emu):
    """A 429 becomes SourceUnavailable with ``ratelimit-reset`` as retry_after (the actor waits)."""
    malsites(emu, 4)
    emu.rate_budget, emu.rate_reset = 2, 11
    with pytest.raises(SourceUnavailable) as exc:
        await pull(adapter(emu))
    assert exc.value.retry_after == 11
    assert emu.requests[-1][1].startswith("/api/v2/events")


async def test_server_error_is_retryable(emu):
    """A 5xx becomes SourceUnavailable."""
    emu.fail_next = [503]
    with pytest.raises(SourceUnavailable, match="503"):
        await pull(adapter(emu))


async def test_bad_token_is_an_auth_error(emu):
    """401 (bad token) and 403 (no permission) disable the plugin until reload."""
    emu.v2_token = "rotated"
    with pytest.raises(AuthError, match="401"):
        await pull(adapter(emu))
    emu.v2_token = "v2-secret"
    emu.forbidden = {"/api/v2/events"}
    with pytest.raises(AuthError, match="403"):
        await pull(adapter(emu))


async def test_pull_once_commits_cursor_and_the_next_cycle_continues(emu, store):
    """Through the real source cycle: IoCs stored, cursor kept, resume point cleared, next cycle uses ``next``."""
    emu._now = None  # the cycle uses the wall clock
    t = now()
    emu.add_alert("malsite", url="http://one.example/", timestamp=t - 60)
    cfg = config(plugin=PLUGIN + 'initial_range = "1h"\nalert_types = ["malsite"]\n')
    p = cfg.plugins["ns"]
    a = adapter(emu, cfg)
    await pull_once("ns", p, a, store, AllowlistRef(), SourceStatus("ns", p))
    cp = await store.checkpoint("ns")
    assert cp.sub is None and cp.cursor == {"index": "ctd_ns", "started": ["malsite"]}
    assert store.conn.execute("SELECT value FROM indicator").fetchall() == [("http://one.example/",)]
    await pull_once("ns", p, a, store, AllowlistRef(), SourceStatus("ns", p))
    assert emu.operations("malsite")[-2:] == ["next", "next"]


# --- push: URL list ---------------------------------------------------------------------


async def test_push_creates_missing_list_appends_and_apply_deploys(emu):
    """A missing list is created (placeholder URL) and the values appended; only ``apply`` deploys them."""
    a = adapter(emu)
    res = await a.push("url_list", url_params(), [item("http://a.example/"), item("b.example", "domain")])
    lst = emu.url_list("ctd-urls")
    assert res.rejected == {} and lst.type == "exact"
    assert lst.urls == ["cedefaultpush.io", "http://a.example/", "b.example"] and lst.applied == []
    assert emu.deploys == 0 and len(emu.calls("POST", "/api/v2/policy/urllist")) == 1
    await a.apply("url_list", url_params())
    assert lst.applied == ["cedefaultpush.io", "http://a.example/", "b.example"] and emu.deploys == 1


async def test_push_appends_to_an_existing_regex_list(emu):
    """An existing list is appended to (not recreated), with the configured list type."""
    a = adapter(emu)
    await a.push("url_list", url_params(type="regex"), [item("http://a.example/")])
    await a.push("url_list", url_params(type="regex"), [item("http://b.example/")])
    lst = emu.url_list("ctd-urls")
    assert lst.type == "regex" and lst.urls[-2:] == ["http://a.example/", "http://b.example/"]
    assert len(emu.url_lists) == 1 and emu.deploys == 0


async def test_invalid_values_fail_with_the_tenant_reason_and_the_rest_is_retried_once(emu):
    """A 400 naming invalid values: those are rejected with its reason, the rest is sent once more."""
    batch = [item("http://ok.example/"), item("2001:db8::1", "ipv6"), item("http://bad example.com/")]
    res = await adapter(emu).push("url_list", url_params(), batch)
    assert res.rejected == {
        "2001:db8::1": "rejected by Netskope: IPv6 addresses are not supported",
        "http://bad example.com/": "rejected by Netskope: Invalid URL: contains whitespace",
    }
    assert emu.url_list("ctd-urls").urls == ["cedefaultpush.io", "http://ok.example/"]
    assert len(emu.calls("PATCH")) == 2


async def test_all_values_invalid_changes_nothing(emu):
    """When every value is refused nothing is resent."""
    res = await adapter(emu).push("url_list", url_params(), [item("2001:db8::2", "ipv6")])
    assert list(res.rejected) == ["2001:db8::2"]
    assert len(emu.calls("PATCH")) == 1 and emu.url_list("ctd-urls").urls == ["cedefaultpush.io"]


async def test_a_400_that_names_no_value_fails_the_batch(emu):
    """A 400 without rejected values is an upstream error; nothing is marked shared."""
    emu.max_url_list_bytes = 100  # stands for 7 MB
    too_big = [item(f"http://{i}.example/") for i in range(10)]
    with pytest.raises(UpstreamDataError, match="exceeds"):
        await adapter(emu).push("url_list", url_params(), too_big)
    assert emu.deploys == 0


async def test_retraction_replaces_the_list_and_apply_deploys(emu):
    """Withdrawn values are removed by replacing the list with the rest; ``apply`` deploys it."""
    a = adapter(emu)
    await a.push("url_list", url_params(), [item("http://a.example/"), item("http://b.example/")])
    await a.apply("url_list", url_params())
    await a.retract("url_list", url_params(), [item("http://a.example/")])
    assert "http://a.example/" in emu.url_list("ctd-urls").applied  # still enforced until deployed
    await a.apply("url_list", url_params())
    assert emu.url_list("ctd-urls").applied == ["cedefaultpush.io", "http://b.example/"]
    assert len(emu.calls("PATCH", "/api/v2/policy/urllist/")) == 2 and emu.deploys == 2
    assert emu.calls("PATCH")[-1][1].endswith("/replace")


async def test_retracting_everything_leaves_the_placeholder(emu):
    """A list emptied by retraction keeps the placeholder URL (the tenant refuses empty lists)."""
    a = adapter(emu)
    await a.push("url_list", url_params(default_url="placeholder.invalid"), [item("http://a.example/")])
    await a.retract(
        "url_list",
        url_params(default_url="placeholder.invalid"),
        [item("http://a.example/"), item("placeholder.invalid", "domain")],
    )
    assert emu.url_list("ctd-urls").urls == ["placeholder.invalid"]


async def test_retraction_of_absent_values_sends_nothing(emu):
    """Withdrawing values the list does not hold (or from a missing list) changes nothing."""
    a = adapter(emu)
    assert (await a.retract("url_list", url_params(), [item("http://a.example/")])).rejected == {}
    await a.push("url_list", url_params(), [item("http://a.example/")])
    await a.retract("url_list", url_params(), [item("http://zzz.example/")])
    assert len(emu.calls("PATCH")) == 1


async def test_push_rate_limited_or_unauthorized(emu):
    """During a push, 429 is retryable with the reset hint and 401 disables."""
    a = adapter(emu)
    emu.rate_budget, emu.rate_reset = 1, 30
    with pytest.raises(SourceUnavailable) as exc:
        await a.push("url_list", url_params(), [item("http://a.example/")])
    assert exc.value.retry_after == 30
    emu.rate_budget = None
    emu.v2_token = "other"
    with pytest.raises(AuthError):
        await a.push("url_list", url_params(), [item("http://a.example/")])


# --- push: file hash list -------------------------------------------------------------------


async def test_hash_list_is_replaced_whole_and_no_change_is_success(emu):
    """The whole list replaces the old one; the same list again ("no change") is a success."""
    emu.hash_lists["ctd-hashes"] = ["c" * 32]
    a = adapter(emu)
    batch = [item("a" * 32, "md5"), item("b" * 64, "sha256")]
    assert (await a.replace("file_hash_list", hash_params(), batch)).rejected == {}
    assert emu.hash_lists["ctd-hashes"] == ["a" * 32, "b" * 64]
    assert (await a.replace("file_hash_list", hash_params(), batch)).rejected == {}
    body = emu.calls("POST", "/api/v1/updateFileHashList")
    assert len(body) == 2 and "token" not in body[0][2]  # the v1 token travels in the body


async def test_empty_hash_list_gets_the_filler(emu):
    """Withdrawing every hash writes the filler value the tenant accepts."""
    emu.hash_lists["ctd-hashes"] = ["c" * 32]
    await adapter(emu).replace("file_hash_list", hash_params(), [])
    assert emu.hash_lists["ctd-hashes"] == ["f" * 64]


async def test_missing_hash_list_is_an_upstream_error(emu):
    """The file hash list must exist in the tenant; otherwise the pass fails with the tenant's text."""
    with pytest.raises(UpstreamDataError, match="not found"):
        await adapter(emu).replace("file_hash_list", hash_params(), [item("a" * 32, "md5")])


async def test_hash_list_needs_a_valid_v1_token(emu):
    """A wrong v1 token, or none configured, is an auth error."""
    emu.hash_lists["ctd-hashes"] = []
    emu.v1_token = "rotated"
    with pytest.raises(AuthError):
        await adapter(emu).replace("file_hash_list", hash_params(), [item("a" * 32, "md5")])
    cfg = config(tenant='[tenants.prod]\nurl = "https://acme.goskope.com"\ntoken = "v2-secret"\n')
    with pytest.raises(AuthError, match="v1_token"):
        await adapter(emu, cfg).replace("file_hash_list", hash_params(), [item("a" * 32, "md5")])


# --- sharing layer ------------------------------------------------------------------------------


def netskope_sharer(store, emu, text: str, name: str):
    cfg = config(SHARE + text)
    sh = cfg.sharing[name]
    return Sharer(name, sh, cfg.rules[sh.rule], cfg.plugins["ns"], adapter(emu, cfg), store)


async def test_sharing_enforces_the_list_limit_newest_first(emu, store):
    """With ``max_entries = 2`` the two newest IoCs are shared and the rest reported unshared."""
    t = now()
    ingest(store.conn, "a", [s(f"http://{i}.example/", "url", last_seen=t - 100 + i) for i in range(4)], now=t)
    sh = netskope_sharer(store, emu, sharing("u", "url_list", '{ list = "ctd", max_entries = 2 }'), "u")
    res = await sh.share_once()
    assert (res.pushed, res.unshared) == (2, 2)
    assert sorted(emu.url_list("ctd").applied[1:]) == ["http://2.example/", "http://3.example/"]


async def test_sharing_counts_byte_size_as_json_plus_three(emu, store):
    """The byte limit counts each value's JSON-escaped length (quoted) plus 3 bytes."""
    t = now()
    ingest(
        store.conn,
        "a",
        [s("http://a.example/", "url", last_seen=t), s("http://b.example/", "url", last_seen=t - 1)],
        now=t,
    )
    limit = len('"http://a.example/"') + 3
    sh = netskope_sharer(store, emu, sharing("u", "url_list", f'{{ list = "ctd", max_bytes = {limit} }}'), "u")
    res = await sh.share_once()
    assert (res.pushed, res.unshared) == (1, 1) and "http://a.example/" in emu.url_list("ctd").applied


async def test_sharing_records_tenant_rejections_and_retractions(emu, store):
    """Through the sharing layer: refused values are failed with the reason; an expired IoC is withdrawn."""
    t = now()
    ingest(store.conn, "a", [s("http://a.example/", "url"), s("2001:db8::1", "ipv6")], now=t)
    sh = netskope_sharer(store, emu, sharing("u", "url_list", '{ list = "ctd" }'), "u")
    res = await sh.share_once()
    assert (res.pushed, res.rejected) == (1, 1)
    counts = (await store.ledger_counts("u"))["counts"]
    assert counts["failed"] == 1
    ingest(store.conn, "a", [s("http://a.example/", "url", retracted=True)], now=t + 1)
    res = await sh.share_once()
    assert res.retracted == 1 and emu.url_list("ctd").applied == ["cedefaultpush.io"]


async def test_sharing_full_hash_list(emu, store):
    """A file-hash sharing sends the whole list, and only hashes."""
    emu.hash_lists["ctd-hashes"] = []
    ingest(store.conn, "a", [s("a" * 32, "md5"), s("b" * 64, "sha256"), s("c" * 40, "sha1")], now=now())
    sh = netskope_sharer(store, emu, sharing("h", "file_hash_list", '{ list = "ctd-hashes" }', rule="hashes"), "h")
    res = await sh.share_once()
    assert res.pushed == 2 and sorted(emu.hash_lists["ctd-hashes"]) == ["a" * 32, "b" * 64]


async def test_bidirectional_sharing_does_not_ping_pong(emu, store):
    """A -> Netskope plus Netskope -> A: each URL reaches the other side once and never comes back."""
    emu._now = None
    t = now()
    fakes = Fakes()
    peer = fakes.remote("ns-peer")
    peer.items["http://from-a.example/x"] = Sighting(type="url", value="http://from-a.example/x")  # type: ignore[assignment]
    emu.add_alert("malsite", url="http://from-ns.example/y", timestamp=t - 60)
    cfg = config(
        plugin=PLUGIN
        + 'initial_range = "1h"\nalert_types = ["malsite"]\n'
        + """
[plugins.A]
adapter = "tests.fake_adapters:MemoryDestination"
key = "ns-peer"
[rules.urls]
filter = "type = url"
[sharing.a-to-ns]
sources = ["A"]
rule = "urls"
destination = "ns"
action = "url_list"
params = { list = "from-a" }
[sharing.ns-to-a]
sources = ["ns"]
rule = "urls"
destination = "A"
action = "add"
"""
    )
    ns = adapter(emu, cfg)
    ex = Exchange(cfg, {"ns": ns, "A": fakes.adapter("A", cfg.plugins["A"])}, store)
    for rnd in range(3):
        if rnd == 1:  # the tenant now blocks what A shared, and alerts on it
            emu.add_alert("malsite", url="http://from-a.example/x", timestamp=now() - 30)
        await ex.round()
    # A's echo of what ctd shared with it may change the effective metadata (one update); it is never withdrawn.
    assert {v for op, vals in peer.calls if op == "push" for v in vals} == {"http://from-ns.example/y"}
    assert not [c for c in peer.calls if c[0] == "retract"]
    appended = [q for m, path, q in emu.calls("PATCH")]
    assert len(appended) == 1
    assert emu.url_list("from-a").applied == ["cedefaultpush.io", "http://from-a.example/x"]


# --- check -------------------------------------------------------------------------------------------


async def test_check_reports_reachability_without_moving_the_iterator(emu):
    """``check`` reads URL lists and the alert export on a separate index, and names the tenant."""
    msg = await adapter(emu).check()
    assert "reached Netskope tenant 'prod'" in msg and "v1 token set" in msg
    assert {q["index"] for _, _, q in emu.calls("GET", "/api/v2/events")} == {"ctd_ns_check"}


async def test_check_with_partial_permissions_says_what_was_refused(emu):
    """A token without URL-list permission still checks out for pulling, and says what was refused."""
    emu.forbidden = {"/api/v2/policy"}
    msg = await adapter(emu).check()
    assert "malware alert export readable" in msg and "refused" in msg and "403" in msg


async def test_check_with_a_bad_token_fails(emu):
    """With a token the tenant refuses, ``check`` raises an auth error."""
    emu.v2_token = "rotated"
    with pytest.raises(AuthError, match="401"):
        await adapter(emu).check()


# --- end to end: the real daemon, the emulator on a real socket ----------------------------------


def test_daemon_pulls_alerts_and_fills_a_url_list_over_http():
    """The real daemon over HTTP on 127.0.0.1: alerts become IoCs, a feed's URL lands in a deployed list."""
    emu = NetskopeTenant()
    emu.add_alert("malsite", url="http://alerted.example/p", timestamp=int(time.time()) - 60, severity="high")
    d = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        with serve_on_localhost(emu) as base:
            (d.dir / "token").write_text("v2-secret\n")
            (d.dir / "osint.txt").write_text("http://feed.example/bad\n")
            d.write_config(f"""
[tenants.prod]
url = "{base}"
token_file = "{d.dir}/token"
[plugins.osint]
adapter = "file"
path = "osint.txt"
[plugins.ns]
adapter = "netskope"
tenant = "prod"
alert_types = ["malsite"]
initial_range = "1h"
[rules.urls]
filter = "type = url"
[sharing.to-ns]
sources = ["osint"]
rule = "urls"
destination = "ns"
action = "url_list"
params = {{ list = "ctd-blocked" }}
""")
            d.start().wait_ready()
            wait_for(
                lambda: (lst := emu.url_list("ctd-blocked")) and "http://feed.example/bad" in lst.applied,
                "the URL list to be deployed",
            )
            found = wait_for(lambda: d.ctl_json("indicators", "search", "--source", "ns"), "the alert's IoC")
            assert [i["value"] for i in found] == ["http://alerted.example/p"]
            check = d.ctl("plugins", "check", "ns")
            assert "reached Netskope tenant 'prod'" in check.stdout, check.stdout + check.stderr
            assert d.stop() == 0
    finally:
        d.cleanup()
