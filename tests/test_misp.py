"""The misp adapter against the MISP emulator: pull paging/resume, push, partial rejection, retraction, errors."""

from __future__ import annotations

import httpx
import pytest

from ctd.adapters.misp.adapter import EventParams, MispAdapter, MispConfig
from ctd.config import parse_config
from ctd.errors import AuthError, ConfigError, SourceUnavailable, UpstreamDataError
from ctd.model import Batch, PullContext, ShareItem
from tests.configutil import decode_options
from tests.emulators.misp import AUTH_FAILED, MispEmulator

URL = "http://misp.test"
KEY = "a" * 40
NOW = 1_800_000_000
CTX = PullContext(since=NOW - 86400, now=NOW)


@pytest.fixture
def emu():
    e = MispEmulator(KEY)
    e.clock = lambda: NOW - 100
    return e


@pytest.fixture
async def make(emu):
    adapters = []

    def factory(**kw):
        cfg = decode_options({"url": URL, "api_key": kw.pop("api_key", KEY), **kw}, MispConfig)
        ad = MispAdapter("misp", cfg, httpx.AsyncClient(transport=emu.transport()))
        adapters.append(ad)
        return ad

    yield factory
    for ad in adapters:
        await ad.aclose()


async def pull_all(adapter, ctx=CTX) -> list[Batch]:
    return [b async for b in adapter.pull(ctx)]


def values(batches: list[Batch]) -> list[str]:
    return [s.value for b in batches for s in b.sightings]


def searches(emu) -> list[dict]:
    return [body for method, path, body in emu.requests if path == "/attributes/restSearch"]


def item(value: str, typ: str = "domain", sources=("edr",)) -> ShareItem:
    return ShareItem(
        type=typ,
        value=value,
        severity="unknown",
        reputation=5,
        tags=(),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=sources,
    )


EVENT = EventParams(event_name="ctd export")


def seed(emu, n: int, *, mtype: str = "domain") -> int:
    eid = emu.add_event("Campaign X", published=True)
    for i in range(n):
        emu.add_attribute(eid, mtype, f"d{i}.example")
    return eid


# --- check ----------------------------------------------------------------------------


async def test_check_reports_the_version(make):
    """check() asks /servers/getVersion and names the version."""
    assert await make().check() == f"MISP 2.5.2 at {URL}"


async def test_check_with_a_bad_key_is_an_auth_error(make):
    """A wrong Authorization key is a 403 with MISP's message: AuthError, without the key."""
    with pytest.raises(AuthError, match="Authentication failed") as exc:
        await make(api_key="b" * 40).check()
    assert "b" * 40 not in str(exc.value)


async def test_wrong_url_is_upstream_data_error(emu):
    """A url that is not the MISP base (404 or a non-JSON page) is reported as such, not as an outage."""
    cfg = decode_options({"url": URL + "/nope", "api_key": KEY}, MispConfig)
    ad = MispAdapter("misp", cfg, httpx.AsyncClient(transport=emu.transport()))
    with pytest.raises(UpstreamDataError, match="base url"):
        await ad.check()
    await ad.aclose()


# --- pull -----------------------------------------------------------------------------


async def test_pull_pages_until_a_short_page(emu, make):
    """Five attributes with page_size 2 come as pages 1-3, each batch naming the next page of the same window."""
    seed(emu, 5)
    batches = await pull_all(make(page_size=2))
    assert [len(b.sightings) for b in batches] == [2, 2, 1]
    assert [b.sub_checkpoint for b in batches] == [{"page": p, "from": CTX.since, "to": CTX.now} for p in (2, 3, 4)]
    assert [q["page"] for q in searches(emu)] == [1, 2, 3]
    assert all(q["attribute_timestamp"] == [CTX.since, CTX.now] and q["limit"] == 2 for q in searches(emu))


async def test_pull_ends_on_an_empty_page(emu, make):
    """When the last page is full, the next (empty) page ends the pull without an empty batch."""
    seed(emu, 4)
    batches = await pull_all(make(page_size=2))
    assert [len(b.sightings) for b in batches] == [2, 2]
    assert [q["page"] for q in searches(emu)] == [1, 2, 3]


async def test_nothing_new_yields_no_batch(make):
    """An empty first page ends the pull at once."""
    assert await pull_all(make()) == []


async def test_resumed_pull_rerequests_the_same_window_then_catches_up(emu, make):
    """A half-done pull resumes at its page of its old window, then covers old 'to'..now from page 1."""
    seed(emu, 3)
    old = {"page": 2, "from": NOW - 5000, "to": NOW - 50}
    ctx = PullContext(since=NOW - 5000, now=NOW, sub_checkpoint=old)
    batches = await pull_all(make(page_size=2), ctx)
    got = [(q["page"], q["attribute_timestamp"]) for q in searches(emu)]
    assert got == [(2, [NOW - 5000, NOW - 50]), (1, [NOW - 50, NOW])]
    assert values(batches) == ["d2.example"]  # page 2 of the old window; nothing newer
    assert batches[-1].sub_checkpoint == {"page": 1, "from": NOW - 50, "to": NOW}


async def test_garbled_sub_checkpoint_starts_over(emu, make):
    """A sub-checkpoint that is not ours is ignored: the pull starts at page 1 of since..now."""
    seed(emu, 1)
    ctx = PullContext(since=CTX.since, now=NOW, sub_checkpoint={"page": "x"})
    assert values(await pull_all(make(), ctx)) == ["d0.example"]
    assert searches(emu)[0]["page"] == 1


async def test_pull_maps_event_link_tags_and_composites(emu, make):
    """Pulled sightings carry the event link and tags; domain|ip becomes two indicators."""
    eid = emu.add_event("Campaign Y")
    emu.add_attribute(eid, "domain|ip", "evil.example|198.51.100.9", tags=("tlp:amber",))
    (batch,) = await pull_all(make())
    assert [(s.type, s.value) for s in batch.sightings] == [("domain", "evil.example"), ("ipv4", "198.51.100.9")]
    assert all(s.reference == f"{URL}/events/view/{eid}" for s in batch.sightings)
    assert batch.sightings[0].tags == ("tlp:amber", "misp-category:Network activity")


async def test_pull_excludes_exported_attributes(emu, make):
    """Attributes tagged with the export tag are filtered out by the request ('!ctd') and never reported."""
    eid = emu.add_event("ctd export")
    emu.add_attribute(eid, "domain", "ours.example", tags=("ctd", 'ctd:source="edr"'))
    emu.add_attribute(eid, "domain", "theirs.example")
    assert values(await pull_all(make())) == ["theirs.example"]
    assert "!ctd" in searches(emu)[0]["tags"]


async def test_soft_deleted_attribute_is_a_retraction(emu, make):
    """An attribute soft-deleted inside the window comes back with deleted=true: a retracted sighting."""
    eid = emu.add_event("Campaign X")
    emu.add_attribute(eid, "url", "http://gone.example/x", deleted=True)
    (batch,) = await pull_all(make())
    assert [(s.value, s.retracted) for s in batch.sightings] == [("http://gone.example/x", True)]


async def test_attributes_outside_the_window_are_not_pulled(emu, make):
    """Only attributes whose timestamp is within since..now are requested."""
    eid = emu.add_event("Campaign X")
    emu.add_attribute(eid, "domain", "old.example", timestamp=CTX.since - 1)
    emu.add_attribute(eid, "domain", "new.example", timestamp=CTX.since)
    assert values(await pull_all(make())) == ["new.example"]


async def test_warninglist_is_enforced_by_default(emu, make):
    """Values on a MISP warninglist are left out unless enforce_warninglist = false."""
    seed(emu, 2)
    emu.warninglist.add("d0.example")
    assert values(await pull_all(make())) == ["d1.example"]
    assert values(await pull_all(make(enforce_warninglist=False))) == ["d0.example", "d1.example"]


async def test_decayed_attributes_are_excluded_with_a_threshold(emu, make):
    """With score_threshold, decayed attributes are dropped and the others get a decay-based reputation."""
    eid = emu.add_event("Campaign X")
    emu.add_attribute(eid, "domain", "fresh.example", score=91.0)
    emu.add_attribute(eid, "domain", "stale.example", score=45.0)
    (batch,) = await pull_all(make(score_threshold=50))
    assert [(s.value, s.reputation) for s in batch.sightings] == [("fresh.example", 10)]


async def test_type_category_and_tag_filters_reach_misp(emu, make):
    """Type, category and tag filters (with '!' negation) select what MISP returns."""
    eid = emu.add_event("Campaign X")
    emu.add_attribute(eid, "domain", "keep.example", tags=("tlp:white",))
    emu.add_attribute(eid, "domain", "fp.example", tags=("tlp:white", "false-positive"))
    emu.add_attribute(eid, "md5", "d41d8cd98f00b204e9800998ecf8427e", tags=("tlp:white",))
    emu.add_attribute(eid, "domain", "other.example", category="External analysis", tags=("tlp:white",))
    ad = make(types=["domain"], categories=["Network activity"], filter_tags=["tlp:white", "!false-positive"])
    assert values(await pull_all(ad)) == ["keep.example"]


async def test_published_filter(emu, make):
    """published = true pulls attributes of published events only."""
    eid = emu.add_event("draft")
    emu.add_attribute(eid, "domain", "draft.example")
    seed(emu, 1)  # a published event
    assert values(await pull_all(make(published=True))) == ["d0.example"]


async def test_rate_limited_pull_is_retried_later(emu, make):
    """A proxy's 429 with Retry-After is SourceUnavailable carrying that delay."""
    seed(emu, 1)
    emu.throttle(retry_after=42)
    with pytest.raises(SourceUnavailable) as exc:
        await pull_all(make())
    assert exc.value.retry_after == 42


async def test_server_error_is_transient(emu, make):
    """A MISP 500 is SourceUnavailable."""
    emu.fail(status=500)
    with pytest.raises(SourceUnavailable):
        await pull_all(make())


async def test_pull_with_a_bad_key_is_an_auth_error(make):
    """restSearch with a bad key is AuthError (the plugin is disabled until reload)."""
    with pytest.raises(AuthError, match="Authentication failed"):
        await pull_all(make(api_key="c" * 40))


async def test_requests_carry_misp_rest_headers(emu, make):
    """Every request sends the key in Authorization and JSON Accept/Content-Type (else MISP is not in REST mode)."""
    seen = []
    real = emu.handler

    async def spy(request):
        seen.append(request.headers)
        return await real(request)

    emu.handler = spy
    await make().check()
    assert seen[0]["authorization"] == KEY and seen[0]["accept"] == "application/json"


# --- push -----------------------------------------------------------------------------


async def test_push_creates_the_event_and_tags_attributes(emu, make):
    """The first push creates the named event with its params and adds tagged attributes."""
    ad = make()
    params = EventParams(event_name="ctd export", distribution=1, threat_level_id=2, analysis=1)
    res = await ad.push("event", params, [item("a.example", sources=("edr", "feed")), item("192.0.2.1", "ipv4")])
    assert res.rejected == {}
    (ev,) = emu.events.values()
    assert (ev["info"], ev["distribution"], ev["threat_level_id"], ev["analysis"]) == ("ctd export", "1", "2", "1")
    assert emu.event_values("ctd export") == ["a.example", "192.0.2.1"]
    assert emu.tags_of("a.example") == ["ctd", 'ctd:source="edr,feed"']


async def test_push_reuses_the_event(emu, make):
    """Later pushes add to the same event and do not look it up or create it again."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    await ad.push("event", EVENT, [item("b.example")])
    paths = [p for _, p, _ in emu.requests]
    assert paths.count("/events/add") == 1 and paths.count("/events/restSearch") == 1
    assert emu.event_values("ctd export") == ["a.example", "b.example"]


async def test_push_finds_an_existing_event_by_exact_name(emu, make):
    """An existing event is found by its exact info, not a LIKE match of another one."""
    emu.add_event("ctd export (old)")
    emu.add_event("CTD_export")  # '_' is a LIKE wildcard and the match is case-insensitive
    eid = emu.add_event("ctd export")
    await make().push("event", EVENT, [item("a.example")])
    assert [a["event_id"] for a in emu.attributes.values()] == [str(eid)]
    assert "/events/add" not in [p for _, p, _ in emu.requests]


async def test_partial_rejection_reports_misp_reasons(emu, make):
    """MISP refusing one attribute (invalid for MISP) rejects that value only, with MISP's reason."""
    res = await make().push("event", EVENT, [item("good.example"), item("evil.x"), item("also.example")])
    assert list(res.rejected) == ["evil.x"]
    assert "Value not in the right type/format" in res.rejected["evil.x"]
    assert emu.event_values("ctd export") == ["good.example", "also.example"]


async def test_duplicate_counts_as_delivered(emu, make):
    """A value the event already holds (MISP: 'A similar attribute already exists') is not a rejection."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    res = await ad.push("event", EVENT, [item("a.example"), item("b.example")])
    assert res.rejected == {}
    assert emu.event_values("ctd export") == ["a.example", "b.example"]


async def test_everything_refused_is_rejections_not_auth(emu, make):
    """MISP's 403 'Could not add Attribute' (all refused) rejects the values; it is not an AuthError."""
    res = await make().push("event", EVENT, [item("evil.x"), item("bad.y")])
    assert set(res.rejected) == {"evil.x", "bad.y"}


async def test_push_batches_of_2500(emu, make):
    """More than 2,500 items go in several /attributes/add calls of at most 2,500."""
    items = [item(f"h{i}.example") for i in range(2600)]
    res = await make().push("event", EVENT, items)
    assert res.rejected == {}
    sizes = [len(b) for _, p, b in emu.requests if p.startswith("/attributes/add/")]
    assert sizes == [2500, 100]


async def test_push_publishes_when_asked(emu, make):
    """publish = true publishes the event after adding (adding unpublishes it in MISP)."""
    await make().push("event", EventParams(event_name="ctd export", publish=True), [item("a.example")])
    (ev,) = emu.events.values()
    assert ev["published"] is True


async def test_rate_limited_push_is_retried_later(emu, make):
    """A 429 on /attributes/add is SourceUnavailable with Retry-After and nothing is marked shared."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    emu.throttle(retry_after=7)
    with pytest.raises(SourceUnavailable) as exc:
        await ad.push("event", EVENT, [item("b.example")])
    assert exc.value.retry_after == 7
    assert emu.event_values("ctd export") == ["a.example"]


async def test_push_with_a_bad_key_is_an_auth_error(make):
    """A bad key on push is AuthError."""
    with pytest.raises(AuthError):
        await make(api_key="d" * 40).push("event", EVENT, [item("a.example")])


async def test_deleted_event_is_looked_up_again(emu, make):
    """If the event vanished, the push fails transiently and the next one recreates it."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    emu.events.clear()
    with pytest.raises(SourceUnavailable, match="gone"):
        await ad.push("event", EVENT, [item("b.example")])
    await ad.push("event", EVENT, [item("b.example")])
    assert emu.event_values("ctd export") == ["b.example"]


# --- retract --------------------------------------------------------------------------


async def test_retraction_soft_deletes_our_attributes(emu, make):
    """Retraction finds the values' attributes in the event and deletes them with deleteSelected."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example"), item("b.example"), item("c.example")])
    res = await ad.retract("event", EVENT, [item("a.example"), item("c.example"), item("never.example")])
    assert res.rejected == {}
    assert emu.event_values("ctd export") == ["b.example"]
    assert emu.event_values("ctd export", deleted=True) == ["a.example", "c.example"]
    (body,) = [b for _, p, b in emu.requests if p.startswith("/attributes/deleteSelected/")]
    assert body["allow_hard_delete"] is False and len(body["id"]) == 2


async def test_retraction_leaves_attributes_ctd_did_not_add(emu, make):
    """Only export-tagged attributes are deleted; one a user added by hand with the same value stays."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    eid = int(next(iter(emu.events)))
    emu.add_attribute(eid, "domain", "a.example", category="External analysis")
    await ad.retract("event", EVENT, [item("a.example")])
    assert emu.event_values("ctd export") == ["a.example"]
    assert emu.tags_of("a.example") == ["ctd", 'ctd:source="edr"']  # the first one: ours, now deleted


async def test_retraction_without_the_event_is_a_no_op(emu, make):
    """Retracting from an event that does not exist succeeds without creating it."""
    res = await make().retract("event", EVENT, [item("a.example")])
    assert res.rejected == {} and emu.events == {}


async def test_retraction_partial_failure_rejects_what_remains(emu, make):
    """When MISP cannot delete some attributes, exactly the values still present are rejected with its message."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example"), item("b.example")])
    stuck = next(int(a["id"]) for a in emu.attributes.values() if a["value"] == "b.example")
    emu.undeletable.add(stuck)
    res = await ad.retract("event", EVENT, [item("a.example"), item("b.example")])
    assert list(res.rejected) == ["b.example"]
    assert "could not be deleted" in res.rejected["b.example"]
    assert emu.event_values("ctd export") == ["b.example"]


async def test_rate_limited_retraction_is_retried_later(emu, make):
    """A 429 during retraction is SourceUnavailable; nothing is deleted."""
    ad = make()
    await ad.push("event", EVENT, [item("a.example")])
    emu.throttle(retry_after=5)
    with pytest.raises(SourceUnavailable):
        await ad.retract("event", EVENT, [item("a.example")])
    assert emu.event_values("ctd export") == ["a.example"]


async def test_retraction_publishes_when_asked(emu, make):
    """publish = true publishes the event again after a deletion."""
    params = EventParams(event_name="ctd export", publish=True)
    ad = make()
    await ad.push("event", params, [item("a.example")])
    emu.events[next(iter(emu.events))]["published"] = False
    await ad.retract("event", params, [item("a.example")])
    assert next(iter(emu.events.values()))["published"] is True


# --- config ---------------------------------------------------------------------------


def test_target_is_the_event_name():
    """Two sharings writing the same event of the same MISP are a config error."""
    with pytest.raises(ConfigError, match="both write 'x'"):
        parse_config(f"""
[plugins.m]
adapter = "misp"
url = "{URL}"
api_key = "k"
pull = false
[plugins.f]
adapter = "file"
path = "/dev/null"
[rules.r]
filter = "type = domain"
[sharing.a]
sources = ["f"]
rule = "r"
destination = "m"
action = "event"
params = {{ event_name = "x" }}
[sharing.b]
sources = ["f"]
rule = "r"
destination = "m"
action = "event"
params = {{ event_name = "x", publish = true }}
""")


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        ('types = ["text"]', "unsupported MISP types"),
        ('export_tag = "!x"', "export_tag"),
        ("score_threshold = 101", "<= 100"),
        ("page_size = 0", ">= 1"),
    ],
)
def test_invalid_options_are_config_errors(extra, msg):
    """Unsupported types, a bad export tag and out-of-range numbers are rejected at config load."""
    with pytest.raises(ConfigError, match=msg):
        parse_config(f'[plugins.m]\nadapter = "misp"\nurl = "{URL}"\napi_key = "k"\n{extra}\n')


def test_url_must_be_http():
    """The url needs a scheme."""
    with pytest.raises(ConfigError, match="http"):
        parse_config('[plugins.m]\nadapter = "misp"\nurl = "misp.example"\napi_key = "k"\n')


def test_auth_error_message_matches_misp():
    """The emulator's auth failure body is MISP's documented one."""
    assert AUTH_FAILED.startswith("Authentication failed.")


# --- bidirectional: A -> MISP and MISP -> A --------------------------------------------

BIDI = f"""
[plugins.A]
adapter = "tests.fake_adapters:MemoryDestination"
key = "{{key}}"
[plugins.misp]
adapter = "misp"
url = "{URL}"
api_key = "{KEY}"
[rules.all]
filter = "type = domain"
[sharing.a-to-misp]
sources = ["A"]
rule = "all"
destination = "misp"
action = "event"
params = {{ event_name = "ctd export" }}
[sharing.misp-to-a]
sources = ["misp"]
rule = "all"
destination = "A"
action = "add"
params = {{ list = "a" }}
"""


@pytest.fixture
def store(tmp_path):
    from tests.fakestore import FakeStore

    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def run_rounds(store, emu, key: str, rounds: int = 3):
    """Pull both sides and run both sharings ``rounds`` times; return (A's remote, misp adapter)."""
    from ctd.model import Sighting
    from tests.exchange import Exchange
    from tests.fake_adapters import Fakes

    fakes = Fakes()
    remote = fakes.remote(key)
    remote.items["from-a.example"] = Sighting(type="domain", value="from-a.example")  # type: ignore[assignment]
    remote.items["both.example"] = Sighting(type="domain", value="both.example")  # type: ignore[assignment]
    cfg = parse_config(BIDI.replace("{key}", key))
    misp = MispAdapter("misp", cfg.plugins["misp"].options, httpx.AsyncClient(transport=emu.transport()))
    ex = Exchange(cfg, {"A": fakes.adapter("A", cfg.plugins["A"]), "misp": misp}, store)
    for _ in range(rounds):
        await ex.round()
    return remote, misp, ex.round


async def test_bidirectional_sharing_with_misp_does_not_loop(store):
    """A->MISP plus MISP->A: each IoC crosses once, MISP never reports ctd's exports, nothing comes back."""
    from tests.storeutil import show

    emu = MispEmulator(KEY)
    eid = emu.add_event("Campaign X")
    emu.add_attribute(eid, "domain", "from-misp.example")
    emu.add_attribute(eid, "domain", "both.example")  # reported by both sides: core loop prevention
    remote, misp, _ = await run_rounds(store, emu, "bidi-misp")
    # A's echo of what ctd shared with it may change the effective metadata (one update); it is never withdrawn.
    pushed_to_a = {v for op, vals in remote.calls if op == "push" for v in vals}
    assert pushed_to_a == {"from-misp.example"} and not [c for c in remote.calls if c[0] == "retract"]
    assert emu.event_values("ctd export") == ["from-a.example"]
    adds = [b for _, p, b in emu.requests if p.startswith("/attributes/add/")]
    assert [a["value"] for batch in adds for a in batch] == ["from-a.example"]
    # export-tag exclusion: MISP holds from-a.example, yet ctd never records MISP as its source
    assert [s["source"] for s in show(store.conn, "domain", "from-a.example")["sources"]] == ["A"]
    assert all("!ctd" in b["tags"] for _, p, b in emu.requests if p == "/attributes/restSearch" and "eventid" not in b)
    await misp.aclose()


async def test_retraction_flows_to_misp_without_coming_back(store):
    """When A stops reporting an IoC, ctd deletes it from the MISP event, and the deletion is not pulled back."""
    from tests.storeutil import show

    emu = MispEmulator(KEY)
    remote, misp, one_round = await run_rounds(store, emu, "bidi-retract", rounds=1)
    assert emu.event_values("ctd export") == ["both.example", "from-a.example"]
    del remote.items["from-a.example"]  # A's next snapshot lacks it: retracted for A
    await one_round()
    await one_round()
    assert emu.event_values("ctd export") == ["both.example"]
    assert emu.event_values("ctd export", deleted=True) == ["from-a.example"]
    assert [s["source"] for s in show(store.conn, "domain", "from-a.example")["sources"]] == ["A"]
    await misp.aclose()


# --- malformed replies ------------------------------------------------------------------


def overriding(emu, path: str, response: httpx.Response):
    """The emulator, except that ``path`` answers ``response``."""

    async def handler(request):
        if request.url.path == path:
            return response
        return await emu.handler(request)

    return handler


async def override(emu, path, response, **kw) -> MispAdapter:
    cfg = decode_options({"url": URL, "api_key": KEY, **kw}, MispConfig)
    return MispAdapter("misp", cfg, httpx.AsyncClient(transport=httpx.MockTransport(overriding(emu, path, response))))


async def test_non_json_reply_is_upstream_data_error(emu):
    """A 200 that is not JSON (a login page, a proxy page) is UpstreamDataError."""
    ad = await override(emu, "/servers/getVersion", httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(UpstreamDataError, match="not JSON"):
        await ad.check()
    await ad.aclose()


async def test_malformed_search_reply_is_upstream_data_error(emu):
    """A restSearch reply without an attribute list is UpstreamDataError."""
    ad = await override(emu, "/attributes/restSearch", httpx.Response(200, json={"response": {"Event": []}}))
    with pytest.raises(UpstreamDataError, match="restSearch"):
        await pull_all(ad)
    await ad.aclose()


async def test_refused_event_creation_names_misp_reason(emu):
    """MISP refusing to create the event (403 saved: false) is UpstreamDataError with its reason, not AuthError."""
    refusal = {
        "saved": False,
        "name": "Could not add Event",
        "message": "Could not add Event",
        "url": "/events/add",
        "errors": {"info": ["Info cannot be empty."]},
    }
    ad = await override(emu, "/events/add", httpx.Response(403, json=refusal))
    with pytest.raises(UpstreamDataError, match="Info cannot be empty"):
        await ad.push("event", EVENT, [item("a.example")])
    await ad.aclose()


def test_filter_tags_reach_the_search_and_tags_stays_the_common_key():
    """In a [plugins] table, `filter_tags` is MISP's tag filter; `tags` adds tags to every IoC, as everywhere."""
    from ctd.adapters.misp.mapping import restsearch_body

    cfg = parse_config(
        '[plugins.m]\nadapter = "misp"\nurl = "https://misp.example"\napi_key = "k"\n'
        'filter_tags = ["tlp:white", "!false-positive"]\ntags = ["from-misp"]\n'
    )
    plugin = cfg.plugins["m"]
    assert plugin.tags == ["from-misp"]
    body = restsearch_body(plugin.options, page=1, start=0, end=1)
    assert body["tags"] == ["tlp:white", "!false-positive", "!ctd"]
