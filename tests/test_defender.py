"""The ``defender`` adapter against its emulator: Entra token, alerts, indicators, BatchDelete, caps, no loops."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from ctd.adapters.defender.adapter import DefenderAdapter
from ctd.adapters.netskope.adapter import NetskopeAdapter
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext, ShareItem, iso, now
from ctd.sharing.actor import Sharer
from tests.emulators.defender import DefenderEmulator
from tests.emulators.defender import iso as mde_iso
from tests.emulators.netskope import NetskopeTenant
from tests.exchange import Exchange
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s

EPOCH = 1_800_000_000
API = "https://api.defender.test"
TENANT = f"""
[tenants.mde]
tenant_id = "tenant-1"
client_id = "mde-app"
client_secret = "mde-secret"
url = "{API}"
login_url = "https://login.defender.test"
"""
PLUGIN = '[plugins.mde]\nadapter = "defender"\ntenant = "mde"\n'
SHA = "ab" * 32


def config(extra: str = "", plugin: str = PLUGIN, tenant: str = TENANT):
    return parse_config(tenant + plugin + extra)


def adapter(emu: DefenderEmulator, cfg=None, transport: httpx.AsyncBaseTransport | None = None) -> DefenderAdapter:
    cfg = cfg or config()
    return DefenderAdapter("mde", cfg.plugins["mde"].options, httpx.AsyncClient(transport=transport or emu.transport()))


def item(value: str, typ: str = "url", remote_id: str | None = None, **kw) -> ShareItem:
    base = dict(
        type=typ,
        value=value,
        severity="critical",
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


P = DefenderAdapter.ACTIONS["indicator"].params


@pytest.fixture
def emu():
    return DefenderEmulator(epoch=EPOCH)


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def pull(a: DefenderAdapter, since: int = EPOCH - 3600, sub=None):
    return [b async for b in a.pull(PullContext(since=since, now=EPOCH, sub_checkpoint=sub))]


def values(batches) -> list[str]:
    return [x.value for b in batches for x in b.sightings]


def alert(emu: DefenderEmulator, *evidence: dict, updated: int = EPOCH - 60, **kw) -> dict:
    return emu.add_alert(evidence=list(evidence), lastUpdateTime=mde_iso(updated), **kw)


def api_calls(emu: DefenderEmulator, path: str, method: str = "POST") -> list:
    return [body for m, p, body in emu.calls if p == path and m == method]


# --- config ------------------------------------------------------------------------------


def test_tenant_binds_with_the_secret_from_a_file(tmp_path):
    """The app registration comes from [tenants.NAME]; client_secret_file works; defaults are Microsoft's hosts."""
    (tmp_path / "sec").write_text("from-file\n")
    cfg = config(tenant=f'[tenants.mde]\ntenant_id = "t"\nclient_id = "c"\nclient_secret_file = "{tmp_path}/sec"\n')
    tenant = cfg.plugins["mde"].options.resolved_tenant
    assert tenant.client_secret == "from-file" and "from-file" not in repr(cfg)
    a = adapter(DefenderEmulator(), cfg)
    assert a.api.base == "https://api.securitycenter.microsoft.com"
    assert a.api.token_url == "https://login.microsoftonline.com/t/oauth2/v2.0/token"


def test_bad_tenant_settings_are_config_errors():
    """A tenant_id with a slash, or a url that is not a base URL, is refused at load with its location."""
    with pytest.raises(ConfigError, match="tenants.mde"):
        config(tenant='[tenants.mde]\ntenant_id = "a/b"\nclient_id = "c"\nclient_secret = "s"\n')
    with pytest.raises(ConfigError, match="url must be a base URL"):
        config(tenant='[tenants.mde]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\nurl = "ftp://x"\n')


def test_action_params_are_validated_and_capped():
    """Unknown Defender actions and a max_entries above the tenant cap are refused at load."""
    share = '[rules.r]\nfilter = "type = url"\n[sharing.x]\nsources = ["mde"]\nrule = "r"\ndestination = "mde"\n'
    with pytest.raises(ConfigError, match="params"):
        config(share + 'action = "indicator"\nparams = { action = "Nuke" }\n')
    with pytest.raises(ConfigError, match="15000"):
        config(share + 'action = "indicator"\nparams = { max_entries = 15001 }\n')


# --- auth ----------------------------------------------------------------------------------


async def test_token_is_reused_then_renewed_before_its_hour_ends(emu, autojump_clock):
    """One token serves many calls; two minutes before expires_in a new one is fetched first."""
    mde = adapter(emu)
    await pull(mde)
    await pull(mde)
    assert emu.tokens.grants == 1
    await trio.sleep(3599 - 100)
    await pull(mde)
    assert emu.tokens.grants == 2


async def test_a_401_renews_the_token_once_and_resends(emu):
    """An expired token (401) gets a new one and the call is sent again."""
    mde = adapter(emu)
    await pull(mde)
    emu.tokens.expire_all()
    await pull(mde)
    assert emu.tokens.grants == 2


async def test_a_second_401_disables_the_plugin(emu):
    """A 401 that persists with a fresh token is an AuthError."""
    emu.tokens.ttl = 0
    with pytest.raises(AuthError, match="even with a new token"):
        await pull(adapter(emu))


async def test_refused_app_credentials_name_the_aadsts_code_not_the_secret(emu):
    """A wrong client secret is an AuthError with Entra's error code, without the secret."""
    emu.apps["mde-app"]["secret"] = "rotated"
    with pytest.raises(AuthError, match="invalid_client AADSTS7000215") as info:
        await adapter(emu).check()
    assert "mde-secret" not in str(info.value)


async def test_a_missing_permission_disables_the_plugin(emu):
    """An app without Alert.Read.All gets 403 on alerts: an AuthError."""
    emu.apps["mde-app"]["roles"] = {"Ti.ReadWrite.All"}
    with pytest.raises(AuthError, match="403"):
        await pull(adapter(emu))


# --- pull ------------------------------------------------------------------------------------------


async def test_alert_evidence_page_by_page_with_a_resumable_link(emu):
    """Evidence hashes, IPs and URLs of alerts updated since the last cycle, following @odata.nextLink."""
    for i in range(3):
        alert(emu, {"entityType": "File", "sha256": f"{i + 1:064x}"}, {"entityType": "Ip", "ipAddress": f"192.0.2.{i}"})
    alert(emu, {"entityType": "Url", "url": "http://old.example/"}, updated=EPOCH - 7200)
    mde = adapter(emu, config(plugin=PLUGIN + "page_size = 2\n"))
    batches = await pull(mde)
    assert [len(b.sightings) for b in batches] == [4, 2]
    assert "http://old.example/" not in values(batches)
    sub = batches[0].sub_checkpoint
    assert sub["since"] == iso(EPOCH - 3600) and "%24skip=2" in sub["next"]
    query = api_calls(emu, "/api/alerts", "GET")
    assert len(query) == 2
    rest = await pull(mde, since=EPOCH, sub=sub)
    assert values(rest) == [f"{3:064x}", "192.0.2.2"]


async def test_alerts_raised_by_custom_indicators_are_not_read_back(emu):
    """An alert a custom indicator raised (ctd's own block at work) is left out: no loop."""
    alert(emu, {"entityType": "Url", "url": "http://ctd-pushed.example/"}, detectionSource="CustomTI")
    alert(emu, {"entityType": "Url", "url": "http://edr-found.example/"}, detectionSource="WindowsDefenderAtp")
    assert values(await pull(adapter(emu))) == ["http://edr-found.example/"]


async def test_a_next_link_to_another_origin_is_refused(emu):
    """A nextLink off the API's origin would carry the token elsewhere: the pull fails, nothing is sent there."""
    for i in range(3):
        alert(emu, {"entityType": "File", "sha256": f"{i + 1:064x}"})
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        resp = emu.handle(request)
        if request.url.path == "/api/alerts":
            body = resp.json()
            if "@odata.nextLink" in body:
                body["@odata.nextLink"] = "https://evil.example/api/alerts?$skip=2"
            return httpx.Response(resp.status_code, json=body)
        return resp

    mde = adapter(emu, config(plugin=PLUGIN + "page_size = 2\n"), httpx.MockTransport(handler))
    with pytest.raises(UpstreamDataError, match="another origin"):
        await pull(mde)
    assert "evil.example" not in seen


async def test_others_indicators_as_a_snapshot(emu):
    """pull_from = "indicators": every indicator not made by ctd, ending a snapshot."""
    emu.add_indicator(SHA, "FileSha256")
    emu.add_indicator("evil.example", "DomainName", action="Allowed")
    mde = adapter(emu, config(plugin=PLUGIN + 'pull_from = "indicators"\n'))
    await mde.push("indicator", P(), [item("http://ctd.example/")])
    batches = await pull(mde)
    got = {x.value: x.retracted for b in batches for x in b.sightings}
    assert got == {SHA: False, "evil.example": True}
    assert batches[-1].snapshot_end


async def test_throttling_waits_retry_after(emu):
    """A 429 raises SourceUnavailable with Defender's Retry-After seconds."""
    emu.limits["alerts.list"] = ((1, 60),)
    mde = adapter(emu)
    await pull(mde)
    with pytest.raises(SourceUnavailable, match="429") as info:
        await pull(mde)
    assert 0 < info.value.retry_after <= 60


async def test_server_errors_are_retried_later(emu):
    """A 5xx is transient, for pulls and pushes alike."""
    emu.fail_next = [500]
    with pytest.raises(SourceUnavailable, match="500"):
        await pull(adapter(emu))
    emu.fail_next = [503]
    with pytest.raises(SourceUnavailable, match="503"):
        await adapter(emu).push("indicator", P(), [item("http://a.example/")])


# --- push -------------------------------------------------------------------------------------


async def test_indicators_are_imported_with_ctd_marks_and_their_ids_returned(emu):
    """Types, action, severity, expiry, alerting and device groups are sent; the ids come back for the ledger."""
    mde = adapter(emu)
    params = P(action="Block", rbac_groups=("Servers",), generate_alert=False)
    res = await mde.push(
        "indicator",
        params,
        [item("http://a.example/x", expires_at=EPOCH + 86400), item(SHA, "sha256"), item("192.0.2.7", "ipv4")],
    )
    assert res.rejected == {}
    by_value = {i["indicatorValue"]: i for i in emu.indicators.values()}
    assert res.ids == {v: i["id"] for v, i in by_value.items()}
    url = by_value["http://a.example/x"]
    assert (url["indicatorType"], url["action"], url["severity"]) == ("Url", "Block", "High")
    assert url["application"] == "ctd" and url["rbacGroupNames"] == ["Servers"] and url["generateAlert"] is False
    assert url["expirationTime"] == iso(EPOCH + 86400)
    assert by_value[SHA]["indicatorType"] == "FileSha256" and by_value["192.0.2.7"]["indicatorType"] == "IpAddress"


async def test_imports_go_in_batches_of_500(emu):
    """More than 500 indicators take two imports (the documented maximum per call)."""
    await adapter(emu).push("indicator", P(), [item(f"{i:064x}", "sha256") for i in range(1, 502)])
    assert [len(b["Indicators"]) for b in api_calls(emu, "/api/indicators/import")] == [500, 1]


async def test_per_indicator_failures_carry_defenders_reason(emu):
    """An indicator Defender refuses (isFailed) is rejected with its failureReason; the rest is imported."""
    res = await adapter(emu).push("indicator", P(), [item("intranet", "domain"), item("good.example", "domain")])
    assert res.rejected == {"intranet": "Domain name intranet is invalid."}
    assert set(res.ids) == {"good.example"}


async def test_types_defender_lacks_are_refused_without_a_call(emu):
    """Email and CIDR have no indicator type: refused per value with a reason."""
    res = await adapter(emu).push("indicator", P(), [item("a@b.example", "email"), item("192.0.2.0/24", "cidr4")])
    assert res.rejected["192.0.2.0/24"].endswith("do not support CIDR notation for IPs")
    assert api_calls(emu, "/api/indicators/import") == []


async def test_the_tenant_cap_rejects_new_indicators_with_a_clear_reason(emu):
    """Past the tenant's active-indicator cap, the new indicators fail with the limit named."""
    emu.max_active = 1
    res = await adapter(emu).push("indicator", P(), [item("http://a.example/"), item("http://b.example/")])
    assert res.rejected["http://b.example/"].startswith("Defender tenant limit of 15,000 active indicators")


async def test_the_cap_is_honoured_newest_first_by_the_sharing(emu, store):
    """A sharing's max_entries keeps the newest IoCs; the others are reported unshared, never pushed."""
    t = now()
    ingest(store.conn, "feed", [s(f"http://{i}.example/", "url", last_seen=t - 10 + i) for i in range(3)], now=t)
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n[rules.r]\nfilter = "type = url"\n'
        '[sharing.to-mde]\nsources = ["feed"]\nrule = "r"\ndestination = "mde"\naction = "indicator"\n'
        "params = { max_entries = 2 }\n"
    )
    sharer = Sharer("to-mde", cfg.sharing["to-mde"], cfg.rules["r"], cfg.plugins["mde"], adapter(emu, cfg), store)
    res = await sharer.share_once()
    assert (res.pushed, res.unshared) == (2, 1) and emu.values() == {"http://1.example/", "http://2.example/"}
    assert DefenderAdapter.ACTIONS["indicator"].max_entries == 15_000


async def test_someone_elses_indicator_is_neither_overwritten_nor_deleted(emu):
    """An analyst's indicator for the same value is reported; ctd's withdrawal leaves it alone."""
    theirs = emu.add_indicator("evil.example", "DomainName", action="Allowed")
    mde = adapter(emu)
    res = await mde.push("indicator", P(action="Block"), [item("evil.example", "domain")])
    assert (
        "from user@corp.example" in res.rejected["evil.example"]
        and "does not overwrite" in res.rejected["evil.example"]
    )
    await mde.retract("indicator", P(), [item("evil.example", "domain")])
    assert emu.indicators[theirs]["action"] == "Allowed"


async def test_ctds_own_indicator_is_updated_in_place(emu):
    """Pushing a value with the id ctd recorded updates that indicator (same id), no duplicate."""
    mde = adapter(emu)
    first = await mde.push("indicator", P(action="Audit"), [item("http://a.example/")])
    rid = first.ids["http://a.example/"]
    again = await mde.push("indicator", P(action="Block"), [item("http://a.example/", remote_id=rid)])
    assert again.ids == {"http://a.example/": rid} and emu.indicators[rid]["action"] == "Block"
    assert len(emu.indicators) == 1


async def test_withdrawal_batch_deletes_recorded_ids_even_when_one_is_gone(emu):
    """BatchDelete takes ctd's ids; when one was deleted meanwhile (404, all or nothing) the rest still goes."""
    mde = adapter(emu)
    res = await mde.push("indicator", P(), [item(f"http://{i}.example/") for i in range(3)])
    gone = res.ids["http://0.example/"]
    del emu.indicators[gone]
    out = await mde.retract("indicator", P(), [item(v, remote_id=rid) for v, rid in res.ids.items()])
    assert out.rejected == {} and emu.indicators == {}
    deletes = api_calls(emu, "/api/indicators/BatchDelete")
    assert len(deletes) == 2 and gone not in deletes[1]["IndicatorIds"]


async def test_sharing_withdraws_only_what_ctd_created(emu, store):
    """Through the ledger: ctd's indicators are deleted by id; an analyst's same-value indicator stays."""
    t = now()
    ingest(store.conn, "feed", [s("http://ctd.example/x", "url"), s("evil.example", "domain")], now=t)
    theirs = emu.add_indicator("evil.example", "DomainName")
    cfg = config(
        '[plugins.feed]\nadapter = "file"\npath = "x.txt"\npull = false\n'
        '[rules.r]\nfilter = "type in (url, domain)"\n'
        '[sharing.to-mde]\nsources = ["feed"]\nrule = "r"\ndestination = "mde"\naction = "indicator"\n'
    )
    sharer = Sharer("to-mde", cfg.sharing["to-mde"], cfg.rules["r"], cfg.plugins["mde"], adapter(emu, cfg), store)
    first = await sharer.share_once()
    assert (first.pushed, first.rejected) == (1, 1)
    store.conn.execute("UPDATE sighting SET retracted = 1")
    store.conn.execute("UPDATE indicator SET active = 0")
    store.conn.execute("UPDATE source SET changes = changes + 1")  # behind the store API: move the marks too
    res = await sharer.share_once()
    assert res.retracted == 1 and list(emu.indicators) == [theirs]


# --- check -------------------------------------------------------------------------------------------


async def test_check_authenticates_and_reads(emu):
    """``check`` gets a token and reads indicators and alerts."""
    msg = await adapter(emu).check()
    assert msg.startswith(f"authenticated for tenant tenant-1 at {API}") and "alerts readable" in msg


async def test_check_says_what_the_app_may_not_read(emu):
    """Without Alert.Read.All the check passes on indicators and names the refusal."""
    emu.apps["mde-app"]["roles"] = {"Ti.ReadWrite.All"}
    msg = await adapter(emu).check()
    assert "indicators readable" in msg and "refused" in msg and "403" in msg


# --- bidirectional with the Netskope tenant -----------------------------------------------------------


async def test_bidirectional_with_netskope_does_not_loop(emu, store):
    """Netskope -> Defender plus Defender -> Netskope: each URL crosses once and never comes back."""
    t = now()
    emu.epoch = t
    ns = NetskopeTenant()
    ns.add_alert("malsite", url="http://from-ns.example/a", timestamp=t - 60)
    alert(emu, {"entityType": "Url", "url": "http://from-mde.example/b"}, updated=t - 60)
    cfg = config(
        '[tenants.ns]\nurl = "https://acme.goskope.com"\ntoken = "v2-secret"\n'
        '[plugins.ns]\nadapter = "netskope"\ntenant = "ns"\nalert_types = ["malsite"]\ninitial_range = "1h"\n'
        '[rules.urls]\nfilter = "type = url"\n'
        '[sharing.ns-to-mde]\nsources = ["ns"]\nrule = "urls"\ndestination = "mde"\naction = "indicator"\n'
        'params = { action = "Block" }\n'
        '[sharing.mde-to-ns]\nsources = ["mde"]\nrule = "urls"\ndestination = "ns"\naction = "url_list"\n'
        'params = { list = "ctd-defender" }\n',
        plugin=PLUGIN + 'initial_range = "1h"\n',
    )
    nsa = NetskopeAdapter("ns", cfg.plugins["ns"].options, httpx.AsyncClient(transport=httpx.MockTransport(ns)))
    ex = Exchange(cfg, {"ns": nsa, "mde": adapter(emu, cfg)}, store)
    for rnd in range(3):
        if rnd == 1:  # Defender blocks what it received, and alerts on it
            alert(
                emu, {"entityType": "Url", "url": "http://from-ns.example/a"}, updated=now(), detectionSource="CustomTI"
            )
        await ex.round()
    assert emu.values() == {"http://from-ns.example/a"}
    assert ns.url_list("ctd-defender").applied == ["cedefaultpush.io", "http://from-mde.example/b"]
    assert len(api_calls(emu, "/api/indicators/import")) == 1 and api_calls(emu, "/api/indicators/BatchDelete") == []
    assert json.dumps(sorted(emu.values_by("mde-app"))) == '["http://from-ns.example/a"]'


async def test_next_links_that_never_end_stop_the_pull(emu, monkeypatch):
    """A server that always names a new next page cannot keep a pull going: it fails as a data error."""
    from ctd.adapters.defender import api as mod

    monkeypatch.setattr(mod, "MAX_PAGES", 3)
    n = iter(range(1000))

    def endless(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/alerts":
            return httpx.Response(200, json={"value": [], "@odata.nextLink": f"{API}/api/alerts?$skip={next(n)}"})
        return emu.handle(request)

    with pytest.raises(UpstreamDataError, match="more than 3 pages"):
        await pull(adapter(emu, transport=httpx.MockTransport(endless)))


async def test_two_sharings_with_one_value_keep_one_indicator(emu, store):
    """The same value selected by two sharings: the first creates it, the second says ctd made it for another one."""
    t = now()
    ingest(store.conn, "a", [s("http://both.example/", "url")], now=t)
    ingest(store.conn, "b", [s("http://both.example/", "url")], now=t)
    share = '[sharing.{n}]\nsources = ["{n}"]\nrule = "r"\ndestination = "mde"\naction = "indicator"\n'
    cfg = config(
        '[plugins.a]\nadapter = "file"\npath = "a.txt"\npull = false\n'
        '[plugins.b]\nadapter = "file"\npath = "b.txt"\npull = false\n[rules.r]\nfilter = "type = url"\n'
        + share.format(n="a")
        + share.format(n="b")
    )
    results = [
        await Sharer(n, cfg.sharing[n], cfg.rules["r"], cfg.plugins["mde"], adapter(emu, cfg), store).share_once()
        for n in ("a", "b")
    ]
    assert [(r.pushed, r.rejected) for r in results] == [(1, 0), (0, 1)] and len(emu.indicators) == 1
    [(reason,)] = store.conn.execute("SELECT error FROM delivery WHERE state = 'failed'").fetchall()
    assert reason.startswith("already a Defender indicator made by ctd for another sharing configuration")
