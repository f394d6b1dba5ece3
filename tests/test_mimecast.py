"""The ``mimecast`` adapter against its emulator: auth, pull, push, retraction by id, limits, errors, no loops."""

from __future__ import annotations

import httpx
import pytest
import trio

from ctd.adapters.mimecast.adapter import MimecastAdapter
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext, ShareItem, now
from ctd.sharing.actor import Sharer
from tests.emulators.mimecast import MimecastEmulator
from tests.emulators.netskope import NetskopeTenant
from tests.exchange import Exchange
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

EPOCH = 1_800_000_000
TENANT = """
[tenants.mc]
url = "https://api.mimecast.test"
client_id = "mc-client"
client_secret = "mc-secret"
"""
PLUGIN = '[plugins.mc]\nadapter = "mimecast"\ntenant = "mc"\n'


def config(extra: str = "", plugin: str = PLUGIN, tenant: str = TENANT):
    return parse_config(tenant + plugin + extra)


def adapter(emu: MimecastEmulator, cfg=None, name: str = "mc", transport=None) -> MimecastAdapter:
    cfg = cfg or config()
    return MimecastAdapter(name, cfg.plugins[name].options, httpx.AsyncClient(transport=transport or emu.transport()))


def item(value: str, typ: str = "url", remote_id: str | None = None, **kw) -> ShareItem:
    base = dict(
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
        sources=("feed",),
        remote_id=remote_id,
    )
    return ShareItem(**{**base, **kw})


URLP = MimecastAdapter.ACTIONS["managed_url"].params
SENDERP = MimecastAdapter.ACTIONS["blocked_sender"].params


@pytest.fixture
def emu():
    return MimecastEmulator(epoch=EPOCH, rate_limit=1000)


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def pull(a: MimecastAdapter, since: int = EPOCH - 3600, now_: int = EPOCH, sub=None):
    return [b async for b in a.pull(PullContext(since=since, now=now_, sub_checkpoint=sub))]


def values(batches) -> list[str]:
    return [x.value for b in batches for x in b.sightings]


def api_paths(emu: MimecastEmulator) -> list[str]:
    return [p for p, _ in emu.calls]


# --- config ----------------------------------------------------------------------------


def test_tenant_binds_with_the_secret_from_a_file(tmp_path):
    """The account's settings come from [tenants.NAME]; client_secret_file works; the secret never shows."""
    (tmp_path / "sec").write_text("from-file\n")
    cfg = config(tenant=f'[tenants.mc]\nclient_id = "id"\nclient_secret_file = "{tmp_path}/sec"\nregion = "uk"\n')
    tenant = cfg.plugins["mc"].options.resolved_tenant
    assert tenant.client_secret == "from-file" and "from-file" not in repr(cfg)
    assert adapter(MimecastEmulator(), cfg).api.base == "https://uk-api.services.mimecast.com"


def test_unknown_tenant_and_resolved_tenant_are_config_errors():
    """A plugin naming no [tenants] table, or setting resolved_tenant itself, is refused at load."""
    with pytest.raises(ConfigError, match="unknown tenant 'nope'"):
        config(plugin='[plugins.mc]\nadapter = "mimecast"\ntenant = "nope"\n')
    with pytest.raises(ConfigError, match="resolved_tenant"):
        config(plugin=PLUGIN + 'resolved_tenant = { client_id = "x", client_secret = "y" }\n')


def test_a_pulling_plugin_needs_something_to_pull():
    """logs = [] without feed_types on a pulling plugin is a config error."""
    with pytest.raises(ConfigError, match="nothing to pull"):
        config(plugin=PLUGIN + "logs = []\n")
    assert config(plugin=PLUGIN + "logs = []\npull = false\n")


# --- auth ---------------------------------------------------------------------------------


async def test_token_is_reused_then_renewed_before_it_expires(emu, autojump_clock):
    """One token serves many calls; close to its 30 minutes a new one is fetched first."""
    mc = adapter(emu)
    await pull(mc)
    await pull(mc)
    assert emu.tokens.grants == 1
    await trio.sleep(1800 - 30)
    await pull(mc)
    assert emu.tokens.grants == 2


async def test_a_401_renews_the_token_once_and_resends(emu):
    """An expired or revoked token (401) gets a new token and the call is sent again."""
    mc = adapter(emu)
    await pull(mc)
    emu.tokens.expire_all()
    await pull(mc)
    assert emu.tokens.grants == 2


async def test_a_second_401_disables_the_plugin(emu):
    """A 401 that persists with a fresh token is an AuthError."""
    emu.tokens.ttl = 0
    with pytest.raises(AuthError, match="even with a new token"):
        await pull(adapter(emu))


async def test_rejected_client_credentials_do_not_leak_the_secret(emu):
    """/oauth/token refusing the credentials raises AuthError naming neither secret."""
    emu.clients["mc-client"] = "rotated"
    with pytest.raises(AuthError, match="client credentials rejected") as info:
        await adapter(emu).check()
    assert "mc-secret" not in str(info.value)


async def test_a_403_disables_the_plugin(emu):
    """An application role without the permission (403) is an AuthError."""
    emu.forbidden = {"/api/ttp/attachment/get-logs"}
    with pytest.raises(AuthError, match="403"):
        await pull(adapter(emu))


# --- pull ------------------------------------------------------------------------------------


async def test_click_logs_page_by_page_with_the_window_in_the_sub_checkpoint(emu):
    """Malicious clicks in [since, now] are read page by page; each batch's sub-checkpoint resumes it."""
    for i in range(5):
        emu.add_click(f"https://evil{i}.example/x", at=EPOCH - 600 + i)
    emu.add_click("https://clean.example/", scan="clean", at=EPOCH - 500)
    emu.add_click("https://old.example/", at=EPOCH - 7200)
    mc = adapter(emu, config(plugin=PLUGIN + 'logs = ["url"]\npage_size = 2\n'))
    batches = await pull(mc)
    assert [len(b.sightings) for b in batches] == [2, 2, 1]
    assert values(batches) == [f"https://evil{i}.example/x" for i in range(5)]
    assert [b.sub_checkpoint and b.sub_checkpoint["token"] for b in batches][:2] != [None, None]
    assert batches[0].sub_checkpoint["from"] == EPOCH - 3600 and batches[0].sub_checkpoint["to"] == EPOCH
    assert batches[-1].sub_checkpoint is None
    rest = await pull(mc, since=EPOCH, now_=EPOCH + 999, sub=batches[0].sub_checkpoint)
    assert values(rest) == [f"https://evil{i}.example/x" for i in range(2, 5)]


async def test_attachments_and_the_feed_give_hashes(emu):
    """Malicious attachments give sha256 IoCs; the threat-intel feed (paged by its header token) md5 and sha256."""
    emu.page_default = 1
    emu.add_attachment("ab" * 32, at=EPOCH - 60)
    emu.add_attachment("cd" * 32, result="safe", at=EPOCH - 60)
    for i in range(2):
        emu.add_feed_row(f"{i + 1:032x}", f"{i + 1:064x}", at=EPOCH - 60)
    mc = adapter(emu, config(plugin=PLUGIN + 'logs = ["attachment"]\nfeed_types = ["malware_customer"]\n'))
    batches = await pull(mc)
    assert values(batches) == ["ab" * 32, f"{1:032x}", f"{1:064x}", f"{2:032x}", f"{2:064x}"]
    feed_calls = [body for path, body in emu.calls if path.endswith("get-feed")]
    assert "token" not in feed_calls[0]["data"][0] and feed_calls[1]["data"][0]["token"]
    assert batches[0].sub_checkpoint == {
        "stream": "feed:malware_customer",
        "from": EPOCH - 3600,
        "to": EPOCH,
        "token": None,
    }


async def test_clicks_on_urls_ctd_blocks_are_not_read_back(emu):
    """A click on a URL blocked by ctd's own Managed URL is its block at work: not pulled, no loop."""
    mc = adapter(emu, config(plugin=PLUGIN + 'logs = ["url"]\n'))
    await mc.push("managed_url", URLP(), [item("https://ctd-blocked.example/x"), item("evil-domain.example", "domain")])
    emu.add_managed_url("https://admin-blocked.example/y")
    for url in ("https://ctd-blocked.example/x", "http://evil-domain.example/z", "https://admin-blocked.example/y"):
        emu.add_click(url, at=EPOCH - 60)
    assert values(await pull(mc)) == ["https://admin-blocked.example/y"]


async def test_rate_limit_waits_the_reset_in_milliseconds(emu):
    """A 429 raises SourceUnavailable whose retry_after is X-RateLimit-Reset (ms) in seconds."""
    emu.rate_limit, emu.rate_reset_ms = 1, 2500
    emu._bucket = 1.0
    mc = adapter(emu)
    with pytest.raises(SourceUnavailable, match="429") as info:
        await pull(mc)
    assert info.value.retry_after == pytest.approx(2.5, abs=0.01)


async def test_server_errors_are_retried_later(emu):
    """A 5xx is transient (SourceUnavailable), for pulls and pushes alike."""
    emu.fail_next = [503]
    with pytest.raises(SourceUnavailable, match="503"):
        await pull(adapter(emu))
    emu.fail_next = [500]
    with pytest.raises(SourceUnavailable, match="500"):
        await adapter(emu).push("managed_url", URLP(), [item("https://a.example/")])


# --- push: Managed URLs ------------------------------------------------------------------------


async def test_managed_urls_are_created_with_their_options_and_ids(emu):
    """URLs become explicit, domains domain-wide blocks with ctd's comment; the ids come back for the ledger."""
    mc = adapter(emu)
    params = URLP(disable_rewrite=True, disable_user_awareness=True)
    res = await mc.push(
        "managed_url", params, [item("https://evil.example/login", comments="kit"), item("bad.example", "domain")]
    )
    assert res.rejected == {}
    assert res.ids == {u["url"]: u["id"] for u in emu.managed_urls.values()}
    by_url = {u["url"]: u for u in emu.managed_urls.values()}
    assert by_url["https://evil.example/login"]["matchType"] == "explicit"
    assert by_url["bad.example"]["matchType"] == "domain" and by_url["bad.example"]["action"] == "block"
    assert by_url["https://evil.example/login"]["comment"] == "kit (shared by ctd from feed)"
    assert by_url["bad.example"]["disableRewrite"] and by_url["bad.example"]["disableUserAwareness"]


async def test_per_item_failures_come_back_with_mimecast_reason(emu):
    """Items Mimecast refuses in its fail list are rejected with its message; the rest is created."""
    emu.max_urls = 1
    res = await adapter(emu).push("managed_url", URLP(), [item("https://a.example/"), item("https://b.example/")])
    assert res.rejected == {"https://b.example/": "The account limit of 1 managed URLs is reached"}
    assert set(res.ids) == {"https://a.example/"}
    assert emu.urls() == {"https://a.example/"}


async def test_a_url_with_a_fragment_is_refused_without_a_call(emu):
    """Mimecast refuses fragments: ctd says so per value and sends nothing for it."""
    res = await adapter(emu).push("managed_url", URLP(), [item("https://a.example/#x")])
    assert res.rejected == {"https://a.example/#x": "Mimecast Managed URLs refuse a URL with a fragment (#)"}
    assert "/api/ttp/url/create-managed-url" not in api_paths(emu)


async def test_someone_elses_managed_url_is_neither_overwritten_nor_deleted(emu):
    """A Managed URL an admin made for the same value is reported; a withdrawal leaves it in place."""
    mine = emu.add_managed_url("https://shared.example/p")
    mc = adapter(emu)
    res = await mc.push("managed_url", URLP(), [item("https://shared.example/p")])
    assert "not created by ctd" in res.rejected["https://shared.example/p"] and res.ids == {}
    await mc.retract("managed_url", URLP(), [item("https://shared.example/p")])
    assert mine in emu.managed_urls


async def test_ctds_own_entry_is_kept_not_duplicated(emu):
    """A value pushed again with the id ctd recorded is left as is (no second create)."""
    mc = adapter(emu)
    first = await mc.push("managed_url", URLP(), [item("https://a.example/")])
    again = await mc.push(
        "managed_url", URLP(), [item("https://a.example/", remote_id=first.ids["https://a.example/"])]
    )
    assert again.ids == first.ids and again.rejected == {}
    assert len(emu.api_calls("/api/ttp/url/create-managed-url")) == 1


async def test_retraction_deletes_by_the_recorded_id_and_a_gone_entry_counts_as_done(emu):
    """Withdrawal deletes the ids ctd recorded; an entry already deleted is not an error."""
    mc = adapter(emu)
    res = await mc.push("managed_url", URLP(), [item("https://a.example/"), item("https://b.example/")])
    del emu.managed_urls[res.ids["https://b.example/"]]
    out = await mc.retract(
        "managed_url", URLP(), [item(v, remote_id=rid) for v, rid in res.ids.items()] + [item("https://c.example/")]
    )
    assert out.rejected == {} and emu.urls() == set()
    assert emu.api_calls("/api/ttp/url/delete-managed-url")[-1]["data"] == [{"id": rid} for rid in res.ids.values()]


async def test_sharing_withdraws_only_what_ctd_created(emu, store):
    """End to end through the ledger: the retraction deletes ctd's entry by id, never an admin's same value."""
    t = now()
    ingest(store.conn, "feed", [s("https://ctd.example/x", "url"), s("evil.example", "domain")], now=t)
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n'
        '[rules.r]\nfilter = "type in (url, domain)"\n'
        '[sharing.to-mc]\nsources = ["feed"]\nrule = "r"\ndestination = "mc"\naction = "managed_url"\n'
    )
    emu.add_managed_url("evil.example", match="explicit")  # same value, the admin's (another match type)
    sharer = Sharer("to-mc", cfg.sharing["to-mc"], cfg.rules["r"], cfg.plugins["mc"], adapter(emu, cfg), store)
    await sharer.share_once()
    assert len(emu.managed_urls) == 3
    store.conn.execute("UPDATE sighting SET retracted = 1")
    store.conn.execute("UPDATE indicator SET active = 0")
    store.conn.execute("UPDATE source SET changes = changes + 1")  # behind the store API: move the marks too
    res = await sharer.share_once()
    assert res.retracted == 2
    assert [(u["url"], u["matchType"]) for u in emu.managed_urls.values()] == [("evil.example", "explicit")]


async def test_a_sharing_limit_keeps_the_newest(emu, store):
    """``max_entries`` caps what one sharing creates, newest first; the rest is reported unshared."""
    t = now()
    ingest(store.conn, "feed", [s(f"https://{i}.example/", "url", last_seen=t - 10 + i) for i in range(3)], now=t)
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n[rules.r]\nfilter = "type = url"\n'
        '[sharing.to-mc]\nsources = ["feed"]\nrule = "r"\ndestination = "mc"\naction = "managed_url"\n'
        "params = { max_entries = 2 }\n"
    )
    sharer = Sharer("to-mc", cfg.sharing["to-mc"], cfg.rules["r"], cfg.plugins["mc"], adapter(emu, cfg), store)
    res = await sharer.share_once()
    assert (res.pushed, res.unshared) == (2, 1) and emu.urls() == {"https://1.example/", "https://2.example/"}


# --- push: blocked sender policies -------------------------------------------------------------


async def test_blocked_sender_policies_for_addresses_and_domains(emu):
    """An email address blocks that sender, a domain the whole sender domain; ids come back."""
    mc = adapter(emu)
    res = await mc.push(
        "blocked_sender", SENDERP(from_part="both"), [item("bad@evil.example", "email"), item("evil.example", "domain")]
    )
    assert res.rejected == {} and set(res.ids) == {"bad@evil.example", "evil.example"}
    assert emu.blocked_senders() == {"bad@evil.example", "evil.example"}
    policy = emu.policies[res.ids["evil.example"]]
    assert policy["option"] == "block_sender" and policy["policy"]["fromPart"] == "both"
    assert policy["policy"]["to"] == {"type": "everyone"} and "shared by ctd" in policy["policy"]["description"]


async def test_a_sender_policy_withdrawal_leaves_others_for_the_same_sender(emu):
    """Deleting ctd's policy by id keeps an admin's policy for the same sender."""
    theirs = emu.add_policy("bad@evil.example")
    mc = adapter(emu)
    res = await mc.push("blocked_sender", SENDERP(), [item("bad@evil.example", "email")])
    out = await mc.retract(
        "blocked_sender", SENDERP(), [item("bad@evil.example", "email", remote_id=res.ids["bad@evil.example"])]
    )
    assert out.rejected == {} and list(emu.policies) == [theirs]


async def test_sender_policy_refusals_are_per_value(emu):
    """A URL is no sender: refused with a reason; a policy Mimecast refuses comes back with its message."""
    res = await adapter(emu).push(
        "blocked_sender", SENDERP(), [item("https://x.example/", "url"), item("bad_@x", "email")]
    )
    assert res.rejected["https://x.example/"].startswith("Mimecast blocked sender policies take")
    assert res.rejected["bad_@x"] == "from.emailAddress must be an email address"


# --- check ------------------------------------------------------------------------------------------


async def test_check_authenticates_and_reads(emu):
    """``check`` gets a token, counts Managed URLs and reads a page of logs."""
    emu.add_managed_url("https://a.example/")
    msg = await adapter(emu).check()
    assert "authenticated at https://api.mimecast.test" in msg and "1 Managed URLs readable" in msg
    assert "URL Protect logs readable" in msg


async def test_check_says_what_the_role_may_not_read(emu):
    """With the Managed URL list forbidden, ``check`` still passes on the logs and names the refusal."""
    emu.forbidden = {"/api/ttp/url/get-all-managed-urls"}
    msg = await adapter(emu).check()
    assert "URL Protect logs readable" in msg and "refused" in msg and "403" in msg


# --- bidirectional with the Netskope tenant ---------------------------------------------------------


async def test_bidirectional_with_netskope_does_not_loop(emu, store):
    """Netskope -> Mimecast plus Mimecast -> Netskope: each URL reaches the other side once and never comes back."""
    t = now()
    emu.epoch = t
    ns = NetskopeTenant()
    ns.add_alert("malsite", url="http://from-ns.example/a", timestamp=t - 60)
    emu.add_click("http://from-mc.example/b", at=t - 60)
    cfg = config(
        '[tenants.ns]\nurl = "https://acme.goskope.com"\ntoken = "v2-secret"\n'
        '[plugins.ns]\nadapter = "netskope"\ntenant = "ns"\nalert_types = ["malsite"]\ninitial_range = "1h"\n'
        '[rules.urls]\nfilter = "type = url"\n'
        '[sharing.ns-to-mc]\nsources = ["ns"]\nrule = "urls"\ndestination = "mc"\naction = "managed_url"\n'
        '[sharing.mc-to-ns]\nsources = ["mc"]\nrule = "urls"\ndestination = "ns"\naction = "url_list"\n'
        'params = { list = "ctd-mimecast" }\n',
        plugin=PLUGIN + 'logs = ["url"]\ninitial_range = "1h"\n',
    )
    from ctd.adapters.netskope.adapter import NetskopeAdapter

    nsa = NetskopeAdapter("ns", cfg.plugins["ns"].options, httpx.AsyncClient(transport=httpx.MockTransport(ns)))
    ex = Exchange(cfg, {"ns": nsa, "mc": adapter(emu, cfg)}, store)
    for rnd in range(3):
        if rnd == 1:  # Mimecast now blocks what it received, and logs the click
            emu.add_click("http://from-ns.example/a", at=now())
        await ex.round()
    assert emu.urls() == {"http://from-ns.example/a"}
    assert ns.url_list("ctd-mimecast").applied == ["cedefaultpush.io", "http://from-mc.example/b"]
    assert len(emu.api_calls("/api/ttp/url/create-managed-url")) == 1
    assert [q for m_, p, q in ns.calls("PATCH")] and len(ns.calls("PATCH")) == 1


async def test_page_tokens_that_never_end_stop_the_pull(emu, monkeypatch):
    """A server that always names a new next page cannot keep a pull going: it fails as a data error."""
    from ctd.adapters.mimecast import adapter as mod

    monkeypatch.setattr(mod, "MAX_PAGES", 3)
    n = iter(range(1000))

    def endless(request: httpx.Request) -> httpx.Response:
        resp = emu.handle(request)
        if request.url.path == "/api/ttp/url/get-logs":
            return httpx.Response(200, json={"meta": {"pagination": {"next": f"t{next(n)}"}}, "data": [], "fail": []})
        return resp

    mc = adapter(emu, config(plugin=PLUGIN + 'logs = ["url"]\n'), transport=httpx.MockTransport(endless))
    with pytest.raises(UpstreamDataError, match="more than 3 pages"):
        await pull(mc)


async def test_a_managed_url_ctd_made_for_another_sharing_is_named_so(emu):
    """A value whose Managed URL carries ctd's mark but not this sharing's id is reported as another sharing's."""
    mc = adapter(emu)
    await mc.push("managed_url", URLP(), [item("https://both.example/")])
    res = await mc.push("managed_url", URLP(), [item("https://both.example/")])
    assert res.rejected["https://both.example/"].startswith("already a Managed URL made by ctd for another sharing")
