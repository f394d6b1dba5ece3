"""The crowdstrike adapter against its emulator: OAuth2, pull, push, retraction, errors, no loops."""

from __future__ import annotations

import time

import httpx
import pytest
import trio

from ctd.adapters.crowdstrike.adapter import CrowdStrikeAdapter, CrowdStrikeConfig, IocParams
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import PullContext, Secret, ShareItem, Sighting, parse_time
from tests.configutil import decode_options
from tests.emulators.crowdstrike import CrowdStrikeEmulator
from tests.exchange import Exchange
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore

BASE = "https://api.crowdstrike.test"
SHA = "ab" * 32
SINCE = parse_time("2025-12-01T00:00:00Z")


@pytest.fixture
def emu():
    return CrowdStrikeEmulator()


def make(emu: CrowdStrikeEmulator, **cfg) -> CrowdStrikeAdapter:
    options = CrowdStrikeConfig(client_id="cid", client_secret=Secret("s3cret"), base_url=BASE, **cfg)
    client = httpx.AsyncClient(transport=emu.transport(), base_url=BASE)
    return CrowdStrikeAdapter("cs", options, client)


def item(value: str = "evil.example", type_: str = "domain", **kw) -> ShareItem:
    base = dict(
        type=type_,
        value=value,
        severity="medium",
        reputation=6,
        tags=(),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("a",),
    )
    return ShareItem(**{**base, **kw})


async def pull_all(adapter: CrowdStrikeAdapter, since: int = SINCE, sub: dict | None = None):
    return [b async for b in adapter.pull(PullContext(since=since, now=since + 86400, sub_checkpoint=sub))]


def api_calls(emu: CrowdStrikeEmulator, method: str | None = None) -> list[tuple[str, str, dict]]:
    return [c for c in emu.calls if c[1] != "/oauth2/token" and (method is None or c[0] == method)]


# --- auth --------------------------------------------------------------------------------


async def test_token_is_reused_until_expiry(emu, autojump_clock):
    """One token serves many calls; close to expires_in a new one is fetched before calling."""
    cs = make(emu)
    await pull_all(cs)
    await pull_all(cs)
    assert emu.token_requests == 1
    await trio.sleep(emu.token_ttl - 30)  # inside the renewal margin
    await pull_all(cs)
    assert emu.token_requests == 2


async def test_401_refreshes_the_token_once_and_resends(emu):
    """An API call answered 401 (token revoked) gets a new token and is sent again, once."""
    cs = make(emu)
    await pull_all(cs)
    emu.expire_tokens()
    batches = await pull_all(cs)
    assert emu.token_requests == 2
    assert batches[-1].sub_checkpoint["after"] is None


async def test_second_401_is_an_auth_error(emu):
    """A 401 that persists with a fresh token disables the plugin (AuthError)."""
    cs = make(emu)
    emu.reject_all_tokens = True
    with pytest.raises(AuthError, match="even with a new token"):
        await pull_all(cs)
    assert emu.token_requests == 2


async def test_bad_client_secret_is_an_auth_error(emu):
    """Rejected client credentials at /oauth2/token raise AuthError without leaking the secret."""
    emu.client_secret = "other"
    cs = make(emu)
    with pytest.raises(AuthError) as info:
        await cs.check()
    assert "s3cret" not in str(info.value) and "client credentials rejected" in str(info.value)


async def test_forbidden_scope_is_an_auth_error(emu):
    """A 403 (missing IOC Manager scope) disables the plugin."""
    cs = make(emu)
    emu.fail_next = [403]
    with pytest.raises(AuthError):
        await pull_all(cs)


# --- pull --------------------------------------------------------------------------------


async def test_pull_paginates_with_after_cursor(emu):
    """Pages follow meta.pagination.after; each batch's sub-checkpoint holds the cursor and window."""
    for i in range(5):
        emu.add("domain", f"d{i}.example")
    cs = make(emu, page_size=2)
    batches = await pull_all(cs)
    assert [len(b.sightings) for b in batches] == [2, 2, 1]
    assert [b.sub_checkpoint["after"] is None for b in batches] == [False, False, True]
    assert all(b.sub_checkpoint["since"] == "2025-12-01T00:00:00Z" for b in batches)
    gets = api_calls(emu, "GET")
    assert "after" not in gets[0][2] and gets[1][2]["after"] == batches[0].sub_checkpoint["after"]
    assert all(g[2]["limit"] == "2" for g in gets)


async def test_pull_resumes_from_sub_checkpoint(emu):
    """A half-done pull resumes at its cursor and keeps its original window."""
    for i in range(4):
        emu.add("domain", f"d{i}.example")
    cs = make(emu, page_size=2)
    first = (await pull_all(cs))[0]
    rest = await pull_all(cs, since=SINCE + 999_999, sub=first.sub_checkpoint)
    assert [s.value for b in rest for s in b.sightings] == ["d2.example", "d3.example"]
    assert "modified_on:>='2025-12-01T00:00:00Z'" in api_calls(emu, "GET")[-1][2]["filter"]


async def test_unknown_resume_cursor_restarts_the_window(emu):
    """A cursor CrowdStrike no longer accepts restarts the window instead of failing forever."""
    emu.add("domain", "d.example")
    cs = make(emu)
    batches = await pull_all(cs, sub={"since": "2025-12-01T00:00:00Z", "after": "bogus"})
    assert [s.value for b in batches for s in b.sightings] == ["d.example"]


async def test_pull_filters_types_window_and_ctd_created(emu):
    """Only configured types modified in the window are pulled, never IOCs ctd created."""
    emu.add("domain", "keep.example")
    emu.add("sha256", SHA)
    emu.add("ipv4", "192.0.2.7")  # type not configured
    emu.add("domain", "mine.example", source="ctd")
    emu.add("domain", "tagged.example", source="other-ctd", tags=["ctd"])
    emu.add("domain", "old.example", modified_on="2025-11-30T23:59:59Z")
    cs = make(emu, types=("domain", "sha256"))
    got = {s.value for b in await pull_all(cs) for s in b.sightings}
    assert got == {"keep.example", SHA}


async def test_pull_maps_allow_to_retraction(emu):
    """An IOC an analyst switched to allow is reported retracted for this source."""
    emu.add("md5", "c" * 32, action="allow")
    (batch,) = await pull_all(make(emu))
    assert batch.sightings[0].retracted


async def test_pull_counts_malformed_iocs(emu):
    """An IOC whose value does not validate is rejected with a reason; the rest ingests."""
    emu.add("domain", "ok.example")
    emu.add("domain", "-bad-")
    (batch,) = await pull_all(make(emu))
    assert [s.value for s in batch.sightings] == ["ok.example"]
    assert len(batch.rejected) == 1 and "domain" in batch.rejected[0].reason


async def test_rate_limit_raises_with_retry_after_from_epoch_header(emu):
    """A 429 becomes SourceUnavailable whose retry_after comes from the epoch X-RateLimit-RetryAfter."""
    cs = make(emu)
    emu.now = int(time.time())
    emu.retry_at_offset = 120
    emu.budget = 0
    with pytest.raises(SourceUnavailable) as info:
        await pull_all(cs)
    assert 100 < info.value.retry_after <= 120
    assert "429" in str(info.value)


async def test_rate_limit_headers_are_sent(emu):
    """Every API reply carries X-RateLimit-Limit and X-RateLimit-Remaining (the emulator's contract)."""
    emu.budget = 5
    cs = make(emu)
    resp = await cs.api.request("GET", "/iocs/combined/indicator/v1", "probe")
    assert resp.headers["X-RateLimit-Limit"] == "6000" and resp.headers["X-RateLimit-Remaining"] == "4"


async def test_server_error_is_transient(emu):
    """A 5xx is retried later (SourceUnavailable)."""
    cs = make(emu)
    emu.fail_next = [503]
    with pytest.raises(SourceUnavailable):
        await pull_all(cs)


async def test_network_error_is_transient():
    """A connection failure is SourceUnavailable."""

    def boom(request):
        raise httpx.ConnectError("refused")

    options = CrowdStrikeConfig(client_id="cid", client_secret="x", base_url=BASE)
    cs = CrowdStrikeAdapter("cs", options, httpx.AsyncClient(transport=httpx.MockTransport(boom), base_url=BASE))
    with pytest.raises(SourceUnavailable, match="refused"):
        await cs.check()


async def test_non_json_reply_is_upstream_error(emu):
    """A reply that is not JSON (a proxy's HTML page) is an UpstreamDataError."""

    async def handler(request):
        if request.url.path == "/oauth2/token":
            return await emu(request)
        return httpx.Response(200, text="<html>maintenance</html>")

    options = CrowdStrikeConfig(client_id="cid", client_secret="s3cret", base_url=BASE)
    cs = CrowdStrikeAdapter("cs", options, httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE))
    with pytest.raises(UpstreamDataError, match="not JSON"):
        await pull_all(cs)
    await cs.aclose()
    assert cs.client.is_closed


async def test_check_reports_tenant_ioc_count(emu):
    """check() authenticates and reports how many custom IOCs the tenant holds."""
    emu.add("domain", "a.example")
    assert "1 custom IOCs" in await make(emu).check()


# --- push --------------------------------------------------------------------------------


async def test_push_creates_iocs_with_ctd_marks(emu):
    """New values are created with action, platforms, severity, expiration, source and the ctd tag."""
    cs = make(emu, source_name="ctd-prod")
    exp = parse_time("2026-06-01T00:00:00Z")
    res = await cs.push("ioc", IocParams(), [item(expires_at=exp, tags=("apt",)), item(SHA, "sha256")])
    assert res.rejected == {}
    ioc = emu.iocs[("domain", "evil.example")]
    assert (ioc["action"], ioc["platforms"], ioc["severity"], ioc["source"], ioc["tags"], ioc["expiration"]) == (
        "detect",
        ["windows", "mac", "linux"],
        "medium",
        "ctd-prod",
        ["ctd", "apt"],
        "2026-06-01T00:00:00Z",
    )
    assert ioc["applied_globally"] is True
    assert "expiration" not in [k for k, v in emu.iocs[("sha256", SHA)].items() if v is not None]
    assert [c[0] for c in api_calls(emu)] == ["GET", "POST"]


async def test_push_to_host_groups(emu):
    """With applied_globally = false the IOC is scoped to the configured host groups."""
    params = IocParams(applied_globally=False, host_groups=("g1", "g2"))
    assert (await make(emu).push("ioc", params, [item()])).rejected == {}
    ioc = emu.iocs[("domain", "evil.example")]
    assert (ioc["applied_globally"], ioc["host_groups"]) == (False, ["g1", "g2"])


async def test_push_updates_ctd_iocs_instead_of_duplicating(emu):
    """A value ctd created before is updated by id (PATCH), not created twice."""
    cs = make(emu)
    await cs.push("ioc", IocParams(), [item(severity="low")])
    res = await cs.push("ioc", IocParams(severity="critical", action="no_action"), [item()])
    assert res.rejected == {}
    assert len(emu.iocs) == 1
    ioc = emu.iocs[("domain", "evil.example")]
    assert (ioc["severity"], ioc["action"]) == ("critical", "no_action")
    assert [c[0] for c in api_calls(emu)] == ["GET", "POST", "GET", "PATCH"]


async def test_push_leaves_iocs_created_by_others_alone(emu):
    """An IOC an analyst created is not overwritten; the value is rejected with the reason."""
    emu.add("domain", "evil.example", action="allow", source="analyst")
    res = await make(emu).push("ioc", IocParams(), [item()])
    assert "already in CrowdStrike from source 'analyst'" in res.rejected["evil.example"]
    assert emu.iocs[("domain", "evil.example")]["action"] == "allow"
    assert [c[0] for c in api_calls(emu)] == ["GET"]


async def test_push_partial_rejection_is_per_ioc(emu):
    """Values CrowdStrike refuses are rejected with its message; the rest of the batch is created."""
    cs = make(emu)
    res = await cs.push("ioc", IocParams(), [item("good.example"), item("not-hex", "md5")])
    assert list(res.rejected) == ["not-hex"] and "Invalid md5 value" in res.rejected["not-hex"]
    assert emu.values() == {"good.example"}


async def test_push_rejects_unsupported_types_without_calling(emu):
    """URLs and prevent-on-domain are refused locally with a clear reason, nothing is sent."""
    cs = make(emu)
    res = await cs.push("ioc", IocParams(action="prevent"), [item("http://x.example/a", "url"), item()])
    assert "no url type" in res.rejected["http://x.example/a"]
    assert "hashes only" in res.rejected["evil.example"]
    assert emu.calls == []


async def test_tenant_cap_rejects_new_iocs_with_clear_reason(emu):
    """At the tenant's IOC cap every new value of the batch is rejected with the cap reason."""
    emu.cap = 2
    emu.add("domain", "one.example")
    cs = make(emu)
    res = await cs.push("ioc", IocParams(), [item("a.example"), item("b.example")])
    assert set(res.rejected) == {"a.example", "b.example"}
    assert "tenant IOC limit reached" in res.rejected["a.example"]
    assert emu.values() == {"one.example"}


async def test_push_batches_of_200_fit_the_api(emu):
    """A full sharing batch (200 values) goes out as one lookup and one create."""
    cs = make(emu)
    spec = CrowdStrikeAdapter.ACTIONS["ioc"]
    values = [f"{i:064x}" for i in range(spec.batch_size)]
    res = await cs.push("ioc", IocParams(), [item(v, "sha256") for v in values])
    assert res.rejected == {} and len(emu.iocs) == 200
    assert [c[0] for c in api_calls(emu)] == ["GET"] * 4 + ["POST"]  # lookups chunked to short URLs


async def test_push_rate_limited_raises_for_retry(emu):
    """A 429 during push fails the whole call (nothing marked shared) with retry_after."""
    cs = make(emu)
    emu.now = int(time.time())
    emu.budget = 1  # the lookup passes, the create is refused
    with pytest.raises(SourceUnavailable) as info:
        await cs.push("ioc", IocParams(), [item()])
    assert info.value.retry_after is not None
    assert emu.iocs == {}


async def test_malformed_request_is_upstream_error(emu):
    """A 400 that names no value is an UpstreamDataError, not a silent rejection."""
    cs = make(emu)
    emu.fail_next = [400]
    with pytest.raises(UpstreamDataError):
        await cs.push("ioc", IocParams(), [item()])


# --- retraction --------------------------------------------------------------------------


async def test_retract_deletes_ctd_iocs_by_value(emu):
    """Retraction deletes ctd's IOCs by value filter; an analyst's IOC with another value stays."""
    cs = make(emu)
    await cs.push("ioc", IocParams(), [item("a.example"), item("b.example")])
    emu.add("domain", "c.example")
    res = await cs.retract("ioc", IocParams(), [item("a.example"), item("c.example"), item("u", "url")])
    assert res.rejected == {}
    assert emu.values() == {"b.example", "c.example"}
    (delete,) = api_calls(emu, "DELETE")
    assert delete[2]["filter"] == "value:['a.example','c.example']+source:'ctd'"


async def test_retract_of_missing_values_is_fine(emu):
    """Withdrawing values already gone succeeds."""
    assert (await make(emu).retract("ioc", IocParams(), [item("gone.example")])).rejected == {}


# --- config ------------------------------------------------------------------------------

CFG = """
[plugins.cs]
adapter = "crowdstrike"
client_id = "cid"
client_secret = "s3cret"
{extra}
"""


def test_config_cloud_selects_base_url():
    """`cloud` picks the regional API base URL; base_url overrides it."""
    cfg = parse_config(CFG.format(extra='cloud = "eu-1"'))
    client = CrowdStrikeAdapter.make_client(cfg.plugins["cs"].options)
    assert str(client.base_url) == "https://api.eu-1.crowdstrike.com"
    cfg = parse_config(CFG.format(extra=f'base_url = "{BASE}"'))
    assert str(CrowdStrikeAdapter.make_client(cfg.plugins["cs"].options).base_url) == BASE


@pytest.mark.parametrize(
    "extra",
    ['cloud = "mars-1"', "page_size = 2001", 'types = ["url"]', "types = []", 'base_url = "ftp://x"', "unknown = 1"],
)
def test_config_rejects_bad_keys(extra):
    """Unknown clouds, page sizes over the documented 2000, unsupported types and unknown keys are errors."""
    with pytest.raises(ConfigError):
        parse_config(CFG.format(extra=extra))


def test_action_params_validated_at_load():
    """Sharing params are checked: actions, platforms, host groups when not global."""
    base = (
        CFG.format(extra="pull = false")
        + """
[rules.r]
filter = "type = sha256"
[sharing.s]
sources = ["cs"]
rule = "r"
destination = "cs"
action = "ioc"
params = {params}
"""
    )
    ok = parse_config(base.replace("{params}", '{ action = "prevent", platforms = ["windows"] }'))
    assert ok.sharing["s"].params.action == "prevent"
    for bad in ('{ action = "block" }', "{ platforms = [] }", "{ applied_globally = false }"):
        with pytest.raises(ConfigError):
            parse_config(base.replace("{params}", bad))


def test_config_defaults():
    """Defaults: us-1 cloud, all five types, source_name ctd, the documented maximum page size."""
    opts = decode_options({"client_id": "a", "client_secret": "b"}, CrowdStrikeConfig)
    assert (opts.cloud, opts.page_size, opts.source_name) == ("us-1", 2000, "ctd")
    assert opts.types == ("sha256", "md5", "domain", "ipv4", "ipv6")


# --- bidirectional -----------------------------------------------------------------------


async def test_bidirectional_with_crowdstrike_does_not_loop(tmp_path, emu):
    """A -> CrowdStrike plus CrowdStrike -> A: each IoC crosses once; ctd's IOCs never come back from CrowdStrike."""
    emu.now = int(time.time())
    emu.add("domain", "from-cs.example")
    fakes = Fakes()
    ra = fakes.remote("cs-loop-a")
    ra.items["from-a.example"] = Sighting(type="domain", value="from-a.example")  # type: ignore[assignment]
    cfg = parse_config(f"""
[plugins.A]
adapter = "tests.fake_adapters:MemoryDestination"
key = "cs-loop-a"
[plugins.cs]
adapter = "crowdstrike"
base_url = "{BASE}"
client_id = "cid"
client_secret = "s3cret"
types = ["domain"]
[rules.all]
filter = "type = domain"
[sharing.a-to-cs]
sources = ["A"]
rule = "all"
destination = "cs"
action = "ioc"
[sharing.cs-to-a]
sources = ["cs"]
rule = "all"
destination = "A"
action = "add"
""")
    store = FakeStore(str(tmp_path / "db"))
    client = httpx.AsyncClient(transport=emu.transport(), base_url=BASE)
    ex = Exchange(
        cfg,
        {"A": fakes.adapter("A", cfg.plugins["A"]), "cs": CrowdStrikeAdapter("cs", cfg.plugins["cs"].options, client)},
        store,
    )
    try:
        for _round in range(3):
            await ex.round()
        cs_reported = {
            r[0]
            for r in store.conn.execute(
                "SELECT i.value FROM sighting s JOIN indicator i ON i.id = s.iid JOIN source so ON so.id = s.sid "
                "WHERE so.name = 'cs'"
            )
        }
    finally:
        store.close()
    # A's echo of what ctd shared with it may change the effective metadata (one update); it is never withdrawn.
    assert {v for op, vals in ra.calls if op == "push" for v in vals} == {"from-cs.example"}
    assert not [c for c in ra.calls if c[0] == "retract"]
    assert emu.iocs[("domain", "from-a.example")]["source"] == "ctd"
    assert emu.values() == {"from-a.example", "from-cs.example"}
    assert cs_reported == {"from-cs.example"}
    assert len(api_calls(emu, "POST")) == 1
