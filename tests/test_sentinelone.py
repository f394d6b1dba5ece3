"""The ``sentinelone`` adapter against its emulator: ApiToken, threats, IOCs, validation errors, deletion, no loops."""

from __future__ import annotations

import httpx
import pytest

from ctd.adapters.netskope.adapter import NetskopeAdapter
from ctd.adapters.sentinelone.adapter import SentinelOneAdapter
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext, ShareItem, iso, now, parse_time
from ctd.sharing.actor import Sharer
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.emulators.netskope import NetskopeTenant
from tests.emulators.sentinelone import DAY, SentinelOneEmulator
from tests.exchange import Exchange
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s
from tests.vendorprocs import Emulator

EPOCH = 1_800_000_000
ACCOUNT, SITE = "1000000000000000001", "2000000000000000001"
TENANT = '[tenants.s1]\nurl = "https://acme.sentinelone.test"\ntoken = "s1-token"\n'
PLUGIN = f'[plugins.s1]\nadapter = "sentinelone"\ntenant = "s1"\naccount_id = "{ACCOUNT}"\n'
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def config(extra: str = "", plugin: str = PLUGIN, tenant: str = TENANT):
    return parse_config(tenant + plugin + extra)


def adapter(emu: SentinelOneEmulator, cfg=None, transport=None) -> SentinelOneAdapter:
    cfg = cfg or config()
    return SentinelOneAdapter(
        "s1", cfg.plugins["s1"].options, httpx.AsyncClient(transport=transport or emu.transport())
    )


def item(value: str, typ: str = "sha256", remote_id: str | None = None, **kw) -> ShareItem:
    base = dict(
        type=typ,
        value=value,
        severity="critical",
        reputation=5,
        tags=("apt",),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("feed",),
        remote_id=remote_id,
    )
    return ShareItem(**{**base, **kw})


P = SentinelOneAdapter.ACTIONS["ioc"].params


@pytest.fixture
def emu():
    return SentinelOneEmulator(epoch=EPOCH)


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def pull(a: SentinelOneAdapter, since: int = EPOCH - 3600, sub=None):
    return [b async for b in a.pull(PullContext(since=since, now=EPOCH, sub_checkpoint=sub))]


def values(batches) -> list[str]:
    return [x.value for b in batches for x in b.sightings]


def calls(emu: SentinelOneEmulator, method: str) -> list:
    return [c for c in emu.calls if c[0] == method]


def others_ioc(emu: SentinelOneEmulator, value: str, typ: str = "SHA256", source: str = "analyst") -> str:
    emu._create(
        emu.tokens[emu.token],
        {},
        {
            "filter": {"accountIds": [ACCOUNT]},
            "data": [{"type": typ, "value": value, "method": "EQUALS", "source": source}],
        },
    )
    return next(u for u, x in emu.iocs.items() if x["value"] == value and x["source"] == source)


# --- config ------------------------------------------------------------------------------------


def test_tenant_binds_with_the_token_from_a_file(tmp_path):
    """The console and token come from [tenants.NAME]; token_file works; the token never shows."""
    (tmp_path / "tok").write_text("from-file\n")
    cfg = config(tenant=f'[tenants.s1]\nurl = "https://c.test"\ntoken_file = "{tmp_path}/tok"\n')
    assert cfg.plugins["s1"].options.resolved_tenant.token == "from-file" and "from-file" not in repr(cfg)


def test_exactly_one_scope():
    """A plugin names one account or one site: neither or both is a config error."""
    with pytest.raises(ConfigError, match="exactly one of account_id or site_id"):
        config(plugin='[plugins.s1]\nadapter = "sentinelone"\ntenant = "s1"\n')
    with pytest.raises(ConfigError, match="exactly one"):
        config(plugin=PLUGIN + f'site_id = "{SITE}"\n')
    with pytest.raises(ConfigError, match="account_id"):
        config(plugin='[plugins.s1]\nadapter = "sentinelone"\ntenant = "s1"\naccount_id = "x; drop"\n')


# --- auth ------------------------------------------------------------------------------------------


async def test_every_call_carries_the_api_token(emu):
    """Calls authenticate with ``Authorization: ApiToken``; a pull works with the console's token."""
    emu.add_threat(sha256="ab" * 32)
    assert values(await pull(adapter(emu))) == ["ab" * 32]


async def test_an_expired_token_disables_the_plugin_and_says_to_renew_it(emu):
    """SentinelOne tokens expire and cannot be refreshed: 401 is an AuthError naming the remedy, not the token."""
    emu.expire_token()
    with pytest.raises(AuthError, match="API token rejected or expired") as info:
        await pull(adapter(emu))
    assert "s1-token" not in str(info.value) and "Authentication Failed" in str(info.value)


async def test_a_renewed_token_works_from_the_next_load(emu):
    """After the operator renews the token (new file contents, reload), calls authenticate again."""
    emu.expire_token()
    emu.add_token("s1-renewed", accounts={ACCOUNT})
    emu.add_threat(sha256="ab" * 32)
    cfg = config(tenant='[tenants.s1]\nurl = "https://acme.sentinelone.test"\ntoken = "s1-renewed"\n')
    assert values(await pull(adapter(emu, cfg))) == ["ab" * 32]


async def test_a_scope_outside_the_token_is_forbidden(emu):
    """A site or account the token cannot see (403) disables the plugin."""
    cfg = config(plugin='[plugins.s1]\nadapter = "sentinelone"\ntenant = "s1"\naccount_id = "999"\n')
    with pytest.raises(AuthError, match="403"):
        await adapter(emu, cfg).push("ioc", P(), [item("ab" * 32)])


# --- pull ----------------------------------------------------------------------------------------------


async def test_threats_page_by_cursor_with_the_window_in_the_sub_checkpoint(emu):
    """Threats updated since the last cycle give their hashes, page by page (pagination.nextCursor)."""
    for i in range(3):
        emu.add_threat(sha256=f"{i + 1:064x}", md5=f"{i + 1:032x}")
    s1 = adapter(emu, config(plugin=PLUGIN + "page_size = 2\n"))
    batches = await pull(s1)
    assert [len(b.sightings) for b in batches] == [4, 2]
    sub = batches[0].sub_checkpoint
    assert sub["since"] == iso(EPOCH - 3600) and sub["cursor"]
    assert calls(emu, "GET")[0][2]["updatedAt__gte"] == iso(EPOCH - 3600)
    assert values(await pull(s1, since=EPOCH, sub=sub)) == [f"{3:064x}", f"{3:032x}"]


async def test_a_false_positive_verdict_withdraws_the_hash(emu):
    """An analyst's false_positive verdict reports the hash as retracted for this source."""
    emu.add_threat(sha256="ab" * 32, analystVerdict="false_positive")
    [batch] = await pull(adapter(emu))
    assert batch.sightings[0].retracted


async def test_others_iocs_but_never_ctds_own(emu):
    """pull_from = "iocs": the scope's IOCs from other sources; ctd's own are left out (no loop)."""
    others_ioc(emu, "cd" * 32)
    s1 = adapter(emu, config(plugin=PLUGIN + 'pull_from = "iocs"\n'))
    await s1.push("ioc", P(), [item("ab" * 32)])
    assert values(await pull(s1)) == ["cd" * 32]


async def test_throttling_is_retried_later_with_or_without_retry_after(emu):
    """A 429 is SourceUnavailable; Retry-After, when present, is the wait."""
    emu.rate_limit = 1
    s1 = adapter(emu)
    await pull(s1)
    with pytest.raises(SourceUnavailable, match="429") as info:
        await pull(s1)
    assert info.value.retry_after and info.value.retry_after > 0

    def bare(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"errors": [{"code": 4290010, "title": "Too Many Requests"}]})

    with pytest.raises(SourceUnavailable) as info:
        await pull(adapter(emu, transport=httpx.MockTransport(bare)))
    assert info.value.retry_after is None


async def test_server_errors_are_retried_later(emu):
    """A 5xx is transient, for pulls and pushes alike."""
    emu.fail_next = [500]
    with pytest.raises(SourceUnavailable, match="500"):
        await pull(adapter(emu))
    emu.fail_next = [502]
    with pytest.raises(SourceUnavailable, match="502"):
        await adapter(emu).push("ioc", P(), [item("ab" * 32)])


# --- push ---------------------------------------------------------------------------------------------


async def test_iocs_are_created_in_the_scope_with_ctds_marks_and_uuids(emu):
    """Type, EQUALS, source, externalId, severity, labels and a clamped validUntil are sent; uuids come back."""
    s1 = adapter(emu)
    t = now()
    far = t + 400 * DAY
    res = await s1.push(
        "ioc", P(), [item("ab" * 32, expires_at=far), item("192.0.2.9", "ipv4"), item("x.example", "hostname")]
    )
    assert res.rejected == {}
    by_value = {x["value"]: x for x in emu.iocs.values()}
    assert res.ids == {v: x["uuid"] for v, x in by_value.items()}
    sha = by_value["ab" * 32]
    assert (sha["type"], sha["method"], sha["source"], sha["severity"]) == ("SHA256", "EQUALS", "ctd", 4)
    assert sha["externalId"].startswith("ctd-") and sha["labels"] == ["ctd", "apt"] and sha["scopeId"] == ACCOUNT
    assert by_value["x.example"]["type"] == "DNS" and by_value["192.0.2.9"]["type"] == "IPV4"
    posted = calls(emu, "POST")[0][3]
    assert posted["filter"] == {"accountIds": [ACCOUNT]}
    sent_until = parse_time(posted["data"][0]["validUntil"])
    assert t + 180 * DAY <= sent_until <= now() + 180 * DAY  # hashes: at most 180 days


async def test_one_invalid_ioc_is_reported_and_the_rest_sent_again(emu):
    """SentinelOne refuses the whole request for one bad item: that item gets its reason, the others are created."""
    res = await adapter(emu).push("ioc", P(), [item("ab" * 32), item(EMPTY_MD5, "md5")])
    assert res.rejected == {EMPTY_MD5: "data.1.value: hashes_empty_file"}
    assert emu.values() == {"ab" * 32} and len(calls(emu, "POST")) == 2


async def test_types_sentinelone_lacks_are_refused_without_a_call(emu):
    """CIDR and email have no IOC type: refused per value."""
    res = await adapter(emu).push("ioc", P(), [item("192.0.2.0/24", "cidr4"), item("a@b.example", "email")])
    assert res.rejected == {
        "192.0.2.0/24": "SentinelOne IOCs have no CIDR type (share single addresses)",
        "a@b.example": "SentinelOne IOCs have no email type",
    }
    assert calls(emu, "POST") == []


async def test_the_scope_cap_refuses_with_the_consoles_reason(emu):
    """Past the scope's IOC cap every new IOC of the request is refused with the console's message."""
    emu.cap = 1
    res = await adapter(emu).push("ioc", P(), [item("ab" * 32), item("cd" * 32)])
    assert set(res.rejected.values()) == {"IOC limit of 1 reached for this scope"}
    assert SentinelOneAdapter.ACTIONS["ioc"].max_entries == 1_000_000


async def test_someone_elses_ioc_is_neither_overwritten_nor_deleted(emu):
    """An IOC another source made for the value is reported; ctd's withdrawal leaves it."""
    theirs = others_ioc(emu, "ab" * 32)
    s1 = adapter(emu)
    res = await s1.push("ioc", P(), [item("ab" * 32)])
    assert res.rejected == {
        "ab" * 32: "already a SentinelOne IOC from source 'analyst' in this scope; ctd does not overwrite it"
    }
    await s1.retract("ioc", P(), [item("ab" * 32)])
    assert emu.iocs[theirs]["source"] == "analyst" and calls(emu, "DELETE") == []


async def test_ctds_own_ioc_is_updated_in_place(emu):
    """Pushing a value with the uuid ctd recorded updates that IOC (same uuid)."""
    s1 = adapter(emu)
    first = await s1.push("ioc", P(), [item("ab" * 32)])
    again = await s1.push("ioc", P(), [item("ab" * 32, severity="low", remote_id=first.ids["ab" * 32])])
    assert again.ids == first.ids and len(emu.iocs) == 1 and emu.iocs[first.ids["ab" * 32]]["severity"] == 1


async def test_withdrawal_filters_on_values_and_recorded_uuids(emu):
    """DELETE names the scope, the values and ctd's uuids; a value ctd recorded no uuid for is not sent."""
    s1 = adapter(emu)
    res = await s1.push("ioc", P(), [item("ab" * 32), item("cd" * 32)])
    await s1.retract("ioc", P(), [item(v, remote_id=u) for v, u in res.ids.items()] + [item("ef" * 32)])
    [(_, _, _, body)] = calls(emu, "DELETE")
    assert body["filter"]["accountIds"] == [ACCOUNT] and sorted(body["filter"]["uuids"]) == sorted(res.ids.values())
    assert sorted(body["filter"]["value__in"]) == ["ab" * 32, "cd" * 32]
    assert emu.iocs == {}


async def test_sharing_withdraws_only_what_ctd_created(emu, store):
    """Through the ledger: ctd's IOCs are deleted by value and uuid; another source's same value stays."""
    t = now()
    emu.epoch = t
    ingest(store.conn, "feed", [s("ab" * 32, "sha256"), s("cd" * 32, "sha256")], now=t)
    theirs = others_ioc(emu, "cd" * 32)
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n[rules.r]\nfilter = "type = sha256"\n'
        '[sharing.to-s1]\nsources = ["feed"]\nrule = "r"\ndestination = "s1"\naction = "ioc"\n'
    )
    sharer = Sharer("to-s1", cfg.sharing["to-s1"], cfg.rules["r"], cfg.plugins["s1"], adapter(emu, cfg), store)
    first = await sharer.share_once()
    assert (first.pushed, first.rejected) == (1, 1)
    store.conn.execute("UPDATE sighting SET retracted = 1")
    store.conn.execute("UPDATE indicator SET active = 0")
    store.conn.execute("UPDATE source SET changes = changes + 1")  # behind the store API: move the marks too
    res = await sharer.share_once()
    assert res.retracted == 1 and list(emu.iocs) == [theirs]


async def test_a_sharing_limit_keeps_the_newest(emu, store):
    """``max_entries`` caps one sharing newest first; the rest is reported unshared."""
    t = now()
    emu.epoch = t
    ingest(store.conn, "feed", [s(f"{i + 1:064x}", "sha256", last_seen=t - 10 + i) for i in range(3)], now=t)
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n[rules.r]\nfilter = "type = sha256"\n'
        '[sharing.to-s1]\nsources = ["feed"]\nrule = "r"\ndestination = "s1"\naction = "ioc"\n'
        "params = { max_entries = 2 }\n"
    )
    sharer = Sharer("to-s1", cfg.sharing["to-s1"], cfg.rules["r"], cfg.plugins["s1"], adapter(emu, cfg), store)
    res = await sharer.share_once()
    assert (res.pushed, res.unshared) == (2, 1) and emu.values() == {f"{2:064x}", f"{3:064x}"}


# --- check ----------------------------------------------------------------------------------------------


async def test_check_reports_the_scope_and_counts(emu):
    """``check`` reaches the scope's IOCs and threats with the token and says how many there are."""
    emu.add_threat(sha256="ab" * 32)
    msg = await adapter(emu).check()
    assert msg == f"reached SentinelOne at https://acme.sentinelone.test, account {ACCOUNT}: 0 IOCs, 1 threats"


async def test_check_with_an_expired_token_fails(emu):
    """With a token the console refuses, ``check`` raises an auth error."""
    emu.expire_token()
    with pytest.raises(AuthError, match="401"):
        await adapter(emu).check()


# --- bidirectional with the Netskope tenant -------------------------------------------------------------


async def test_bidirectional_with_netskope_does_not_loop(emu, store):
    """Netskope -> SentinelOne plus SentinelOne -> Netskope: each value crosses once; ctd's IOCs never come back."""
    t = now()
    emu.epoch = t
    ns = NetskopeTenant()
    ns.hash_lists["ctd-s1"] = []
    ns.add_alert("malware", timestamp=t - 60, md5="ee" * 16, local_sha256="ef" * 32)
    emu.add_threat(sha256="ab" * 32)
    cfg = config(
        '[tenants.ns]\nurl = "https://acme.goskope.com"\ntoken = "v2-secret"\nv1_token = "v1-secret"\n'
        '[plugins.ns]\nadapter = "netskope"\ntenant = "ns"\nalert_types = ["malware"]\ninitial_range = "1h"\n'
        '[rules.hashes]\nfilter = "type in (md5, sha256)"\n'
        '[sharing.ns-to-s1]\nsources = ["ns"]\nrule = "hashes"\ndestination = "s1"\naction = "ioc"\n'
        '[sharing.s1-to-ns]\nsources = ["s1"]\nrule = "hashes"\ndestination = "ns"\naction = "file_hash_list"\n'
        'params = { list = "ctd-s1" }\n',
        plugin=PLUGIN + 'initial_range = "1h"\n',
    )
    nsa = NetskopeAdapter("ns", cfg.plugins["ns"].options, httpx.AsyncClient(transport=httpx.MockTransport(ns)))
    ex = Exchange(cfg, {"ns": nsa, "s1": adapter(emu, cfg)}, store)
    for _ in range(3):
        await ex.round()
    assert emu.values() == {"ee" * 16, "ef" * 32}
    assert sorted(ns.hash_lists["ctd-s1"]) == ["ab" * 32]
    assert len(calls(emu, "POST")) == 1 and calls(emu, "DELETE") == []


# --- ctdctl plugins check, the real daemon against the standalone emulator -----------------------------


def test_ctdctl_plugins_check_against_the_standalone_emulator(tmp_path):
    """``ctdctl plugins check`` makes an authenticated call to the console; a wrong token fails it, no token shown."""
    emu = Emulator("sentinelone")
    d = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        emu.started()
        (d.dir / "good").write_text(emu.creds["token"] + "\n")
        (d.dir / "bad").write_text("not-the-token\n")
        plugin = '[plugins.{n}]\nadapter = "sentinelone"\ntenant = "{t}"\npull = false\naccount_id = "{a}"\n'
        tenant = '[tenants.{t}]\nurl = "{u}"\ntoken_file = "{f}"\n'
        d.write_config(
            "".join(
                tenant.format(t=t, u=emu.base, f=d.dir / t) + plugin.format(n=n, t=t, a=emu.creds["accountId"])
                for n, t in (("s1", "good"), ("s1-bad", "bad"))
            )
        )
        d.start().wait_ready()
        ok = d.ctl_json("plugins", "check", "s1")
        assert ok["ok"] and ok["message"].startswith(f"reached SentinelOne at {emu.base}, account"), ok
        bad = d.ctl("--json", "plugins", "check", "s1-bad")
        assert bad.returncode == 2 and "API token rejected or expired" in bad.stdout + bad.stderr
        assert "not-the-token" not in bad.stdout + bad.stderr
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        d.cleanup()
        emu.stop()


async def test_cursors_that_never_end_stop_the_pull(emu, monkeypatch):
    """A server that always names a new cursor cannot keep a pull going: it fails as a data error."""
    from ctd.adapters.sentinelone import api as mod

    monkeypatch.setattr(mod, "MAX_PAGES", 3)
    n = iter(range(1000))

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [], "pagination": {"nextCursor": f"c{next(n)}"}})

    with pytest.raises(UpstreamDataError, match="more than 3 pages"):
        await pull(adapter(emu, transport=httpx.MockTransport(endless)))


async def test_an_ioc_ctd_made_for_another_sharing_is_named_so(emu):
    """A value whose IOC has ctd's source but not this sharing's uuid is reported as another sharing's."""
    s1 = adapter(emu)
    await s1.push("ioc", P(), [item("ab" * 32)])
    res = await s1.push("ioc", P(), [item("ab" * 32)])
    assert res.rejected["ab" * 32].startswith("already a SentinelOne IOC made by ctd for another sharing")
