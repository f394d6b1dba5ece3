"""Pure mapping of the crowdstrike adapter: FQL, IOC -> sighting, ShareItem -> IOC, per-IOC errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctd.adapters.crowdstrike import mapping as m
from ctd.errors import InvalidIndicator
from ctd.model import ShareItem, parse_time
from tests.emulators.crowdstrike import parse_fql

SHA = "a" * 64


def item(type_: str = "domain", value: str = "evil.example", **kw) -> ShareItem:
    base = dict(
        type=type_,
        value=value,
        severity="high",
        reputation=7,
        tags=("apt",),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("misp",),
    )
    return ShareItem(**{**base, **kw})


def test_pull_filter_selects_types_window_and_excludes_ctd():
    """The pull filter names the types, the modified_on window, and excludes ctd's source and tag."""
    f = m.pull_filter(("sha256", "domain"), "2026-01-01T00:00:00Z", "ctd")
    assert f == "type:['sha256','domain']+modified_on:>='2026-01-01T00:00:00Z'+source:!'ctd'+tags:!'ctd'"


def test_fql_quote_escapes_quotes_and_backslashes():
    """Quotes and backslashes inside a value are escaped in the FQL literal."""
    assert m.fql_quote("it's\\x") == "'it\\'s\\\\x'"


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1), min_size=1, max_size=5))
def test_fql_list_round_trips_through_a_parser(values):
    """Any value list survives quoting: an FQL parser reads back exactly the values sent."""
    assert parse_fql(m.fql_list("value", values)) == [("value", "in", values)]


def test_value_chunks_respect_count_and_length():
    """Value lists split so no filter passes the character or count budget, order kept."""
    values = [f"{i:032x}" for i in range(50)]
    chunks = list(m.value_chunks(values, max_chars=400, max_count=20))
    assert [v for c in chunks for v in c] == values
    assert all(len(c) <= 20 and len(m.fql_list("value", c)) <= 400 + 10 for c in chunks)


def test_ioc_maps_to_sighting():
    """An IOC's type, value, severity, tags, description, times and expiration map to a sighting."""
    s = m.to_sighting(
        {
            "id": "1",
            "type": "domain",
            "value": "Evil.Example",
            "severity": "HIGH",
            "tags": ["apt", ""],
            "description": "seen in phishing",
            "created_on": "2026-01-01T00:00:00.123456Z",
            "modified_on": "2026-01-02T00:00:00Z",
            "expiration": "2026-02-01T00:00:00Z",
            "action": "detect",
        }
    )
    assert (s.type, s.value, s.severity, s.tags, s.comments) == (
        "domain",
        "evil.example",
        "high",
        ("apt",),
        "seen in phishing",
    )
    assert s.first_seen == parse_time("2026-01-01T00:00:00Z")
    assert s.last_seen == parse_time("2026-01-02T00:00:00Z")
    assert s.expires_at == parse_time("2026-02-01T00:00:00Z")
    assert not s.retracted


@pytest.mark.parametrize("fields", [{"action": "allow"}, {"action": "no_action"}, {"expired": True}])
def test_ioc_no_longer_enforced_is_a_retraction(fields):
    """An IOC switched to allow/no_action, or expired, withdraws the value for this source."""
    s = m.to_sighting({"type": "md5", "value": "b" * 32, "action": "detect", **fields})
    assert s.retracted


def test_informational_severity_is_unknown():
    """CrowdStrike's informational severity maps to ctd's unknown (and back on push)."""
    assert m.to_sighting({"type": "ipv4", "value": "192.0.2.1", "severity": "informational"}).severity == "unknown"
    assert (
        m.indicator(
            item(severity="unknown"),
            action="detect",
            platforms=["linux"],
            applied_globally=True,
            severity=None,
            source="ctd",
        )["severity"]
        == "informational"
    )


def test_bad_iocs_are_rejected_with_reasons():
    """Malformed IOCs and unknown types are rejected per record; the rest still maps."""
    sightings, rejected = m.parse_page(
        [
            {"id": "ok", "type": "sha256", "value": SHA.upper()},
            {"id": "bad", "type": "md5", "value": "xyz"},
            {"id": "odd", "type": "url", "value": "http://x.example/"},
            "not an object",
        ]
    )
    assert [s.value for s in sightings] == [SHA]
    assert [r.where for r in rejected] == ["IOC bad", "IOC odd", "IOC ?"]
    assert "md5" in rejected[0].reason and "url" in rejected[1].reason


def test_next_after_reads_meta_pagination():
    """The cursor comes from meta.pagination.after; empty or missing means the last page."""
    assert m.next_after({"meta": {"pagination": {"after": "abc"}}}) == "abc"
    assert m.next_after({"meta": {"pagination": {"after": ""}}}) is None
    assert m.next_after({"meta": {}}) is None
    assert m.next_after(None) is None


@pytest.mark.parametrize(
    ("type_", "action", "word"),
    [
        ("url", "detect", "url"),
        ("sha1", "detect", "sha1"),
        ("cidr4", "detect", "CIDR"),
        ("email", "detect", "email"),
        ("domain", "prevent", "hashes only"),
        ("ipv4", "allow", "hashes only"),
    ],
)
def test_unsupported_iocs_get_a_reason(type_, action, word):
    """Types IOC management lacks, and blocking actions on non-hashes, are refused with a reason."""
    assert word in m.unsupported_reason(item(type_), action)


def test_hostname_is_pushed_as_domain_and_hashes_may_be_blocked():
    """A hostname goes out as a domain IOC; prevent is fine for a sha256."""
    assert m.unsupported_reason(item("hostname", "www.evil.example"), "detect") is None
    assert (
        m.indicator(
            item("hostname"), action="detect", platforms=["mac"], applied_globally=True, severity=None, source="ctd"
        )["type"]
        == "domain"
    )
    assert m.unsupported_reason(item("sha256", SHA), "prevent") is None


def test_indicator_body_carries_ctd_marks_and_expiration():
    """The IOC body has action, platforms, severity, source, the ctd tag first and an RFC3339 expiration."""
    body = m.indicator(
        item(expires_at=parse_time("2026-03-01T12:00:00Z"), comments="phish kit", tags=("apt", "ctd")),
        action="detect",
        platforms=["windows", "linux"],
        applied_globally=True,
        severity=None,
        source="ctd-prod",
    )
    assert body == {
        "type": "domain",
        "value": "evil.example",
        "action": "detect",
        "platforms": ["windows", "linux"],
        "applied_globally": True,
        "severity": "high",
        "source": "ctd-prod",
        "tags": ["ctd", "apt"],
        "description": "phish kit (shared by ctd from misp)",
        "expiration": "2026-03-01T12:00:00Z",
    }


def test_indicator_without_expiry_omits_expiration_and_honours_severity_override():
    """No expiry means no expiration field; a configured severity wins over the IoC's."""
    body = m.indicator(
        item(), action="no_action", platforms=["mac"], applied_globally=True, severity="critical", source="ctd"
    )
    assert "expiration" not in body and body["severity"] == "critical"


def test_per_ioc_errors_from_resources():
    """Resources marked as errors name their value and reason; created ones are not errors."""
    body = {
        "errors": [{"code": 400, "message": "1 indicator(s) rejected"}],
        "resources": [
            {"value": "a.example", "message_type": "error", "message": "Duplicate type: 'domain'"},
            {"value": "b.example", "id": "9"},
        ],
    }
    assert m.per_ioc_errors(body, ["a.example", "b.example"]) == {"a.example": "Duplicate type: 'domain'"}


def test_per_ioc_errors_by_id_for_updates():
    """Update replies that name an IOC by id are mapped back to its value."""
    body = {"resources": [{"id": "7", "message_type": "error", "message": "Indicator not found"}]}
    assert m.per_ioc_errors(body, ["x.example"], {"7": "x.example"}) == {"x.example": "Indicator not found"}


def test_tenant_cap_rejects_every_value_of_the_batch():
    """The 1-million cap error (batch-level) becomes a clear per-value reason for every value sent."""
    body = {"errors": [{"code": 400, "message": "Limit of 1 million indicators reached."}], "resources": None}
    out = m.per_ioc_errors(body, ["a.example", "b.example"])
    assert set(out) == {"a.example", "b.example"}
    assert out["a.example"].startswith("CrowdStrike tenant IOC limit reached (1,000,000)")


def test_success_reply_has_no_errors():
    """A clean reply yields no rejections."""
    assert m.per_ioc_errors({"errors": [], "resources": [{"value": "a.example"}]}, ["a.example"]) == {}


def test_non_dict_ioc_raises():
    """A resource that is not an object is an invalid indicator."""
    with pytest.raises(InvalidIndicator):
        m.to_sighting(["x"])
