"""Pure mapping of the sentinelone adapter: items -> IOCs, validation errors -> reasons, threats/IOCs -> sightings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctd.adapters.sentinelone import mapping as m
from ctd.errors import InvalidIndicator
from ctd.model import Rejected, ShareItem, Sighting, parse_time

FIX = Path(__file__).parent / "fixtures" / "sentinelone"
DAY = 86400


def load(name: str):
    return json.loads((FIX / name).read_text())


def Item(**fields: Any) -> ShareItem:
    """A ShareItem (what the sharing layer hands a destination) with the defaults these tests leave out."""
    defaults: dict[str, Any] = dict(
        severity="high",
        reputation=7,
        tags=(),
        comments="",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("misp",),
    )
    return ShareItem(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        ("md5", "MD5"),
        ("sha1", "SHA1"),
        ("sha256", "SHA256"),
        ("ipv4", "IPV4"),
        ("ipv6", "IPV6"),
        ("domain", "DNS"),
        ("hostname", "DNS"),
        ("url", "URL"),
    ],
)
def test_types_map_to_ioc_types(type_, kind):
    """Each ctd type SentinelOne knows maps to its upper-case IOC type."""
    assert m.refusal(Item(type=type_, value="v")) is None
    assert m.ioc(Item(type=type_, value="v"), now=0)["type"] == kind


@pytest.mark.parametrize(
    ("type_", "reason"),
    [
        ("cidr4", "SentinelOne IOCs have no CIDR type (share single addresses)"),
        ("cidr6", "SentinelOne IOCs have no CIDR type (share single addresses)"),
        ("email", "SentinelOne IOCs have no email type"),
    ],
)
def test_cidr_and_email_are_refused(type_, reason):
    """CIDR and email items are refused with a reason."""
    assert m.refusal(Item(type=type_, value="v")) == reason


def test_ioc_body():
    """The IOC carries EQUALS, source, a stable externalId, name, description, validUntil, labels, severity."""
    item = Item(type="domain", value="evil.example", tags=("apt", "ctd"), comments="phish", expires_at=10 * DAY)
    assert m.ioc(item, now=0) == {
        "type": "DNS",
        "value": "evil.example",
        "method": "EQUALS",
        "source": "ctd",
        "externalId": m.external_id(item),
        "name": "ctd: evil.example",
        "description": "phish (shared by ctd from misp)",
        "validUntil": "1970-01-11T00:00:00Z",
        "labels": ["ctd", "apt"],
        "severity": 3,
    }
    assert m.external_id(item).startswith("ctd-") and len(m.external_id(item)) == 36
    assert m.external_id(item) != m.external_id(Item(type="hostname", value="evil.example"))


def test_valid_until_is_clamped_and_defaulted_per_type():
    """An expiry past the console's cap is clamped (30 d for IPs); no expiry takes the default (90 d URL)."""
    assert m.valid_until(Item(type="ipv4", value="192.0.2.1", expires_at=365 * DAY), now=0) == 30 * DAY
    assert m.valid_until(Item(type="url", value="http://x.example/"), now=0) == 90 * DAY
    assert m.valid_until(Item(type="sha256", value="a" * 64, expires_at=DAY), now=0) == DAY


def test_unknown_severity_is_omitted():
    """ctd's unknown severity sends no severity at all."""
    assert "severity" not in m.ioc(Item(type="md5", value="a" * 32, severity="unknown"), now=0)


def test_validation_errors_map_to_values_by_index():
    """data.<i> errors name sent[i]'s value; two errors on one item are joined."""
    sent = [{"value": "a" * 64}, {"value": "10.0.0.0/8"}, {"value": "d41d8cd98f00b204e9800998ecf8427e"}]
    assert m.validation_failures(load("create_400.json"), sent) == {
        "10.0.0.0/8": "data.1.value: Invalid IPV4 value",
        "d41d8cd98f00b204e9800998ecf8427e": "data.2.value: hashes_empty_file; "
        "data.2.source: Missing data for required field.",
    }


def test_unindexed_error_applies_to_every_value():
    """An error naming no item (scope, cap) is every sent value's reason."""
    body = {
        "errors": [
            {"code": 4000010, "detail": "IOC limit of 1000000 reached for this scope", "title": "Validation Error"}
        ]
    }
    assert m.validation_failures(body, [{"value": "a"}, {"value": "b"}]) == {
        "a": "IOC limit of 1000000 reached for this scope",
        "b": "IOC limit of 1000000 reached for this scope",
    }


def test_scope_and_delete_bodies():
    """One scope per call; deletes select by value__in inside it and never go unselective."""
    scope = m.scope_filter(account_id="1")
    assert m.create_body([{"value": "x"}], scope) == {"filter": {"accountIds": ["1"]}, "data": [{"value": "x"}]}
    assert m.delete_body(["x", "y"], m.scope_filter(site_id="2")) == {
        "filter": {"siteIds": ["2"], "value__in": ["x", "y"]}
    }
    with pytest.raises(ValueError):
        m.delete_body([], scope)
    with pytest.raises(ValueError):
        m.scope_filter()


def test_threat_hashes_to_sightings():
    """A threat's sha256 and sha1 become sightings with its times, confidence and console link."""
    page = load("threats.json")
    sightings, rejected = m.threat_to_sightings(page["data"][0], console="https://acme.sentinelone.net/")
    base = dict(
        first_seen=parse_time("2026-11-20T10:00:00Z"),
        last_seen=parse_time("2026-11-20T11:00:00Z"),
        severity="high",
        tags=("sentinelone", "Ransomware"),
        comments="evil.exe",
        reference="https://acme.sentinelone.net/incidents/threats/1300000000000000001/overview",
    )
    assert sightings == [
        Sighting(type="sha256", value="a4752c71d81afd3d5865d24ddb11a6b0c615062fcc448d24050c2172d2cbccd6", **base),
        Sighting(type="sha1", value="da39a3ee5e6b4b0d3255bfef95601890afd80709", **base),
    ]
    assert rejected == [] and m.next_cursor(page) == "MTAw"


def test_false_positive_bad_hash_and_hashless_threats():
    """A bad md5 is rejected; a threat without any hash is reported; nothing is dropped silently."""
    page = load("threats.json")
    assert m.threat_to_sightings(page["data"][1]) == (
        [],
        [Rejected(where="threat 1300000000000000002", reason="md5: not a valid md5 (expected 32 hex digits)")],
    )
    assert m.threat_to_sightings(page["data"][2]) == (
        [],
        [Rejected(where="threat 1300000000000000003", reason="threat has no file hash")],
    )
    assert m.threat_to_sightings("junk") == ([], [Rejected(where="threat ?", reason="threat has no threatInfo")])


def test_false_positive_verdict_withdraws():
    """analystVerdict false_positive marks the hashes retracted for this source."""
    threat = {"id": "9", "threatInfo": {"sha256": "b" * 64, "analystVerdict": "false_positive"}}
    assert m.threat_to_sightings(threat)[0][0].retracted


def test_iocs_page_to_sightings():
    """Console IOCs map to sightings with labels as tags; an unknown type raises InvalidIndicator."""
    page = load("iocs_page.json")
    assert m.ioc_to_sighting(page["data"][0]) == Sighting(
        type="domain",
        value="evil.example",
        first_seen=parse_time("2026-11-01T00:00:00Z"),
        last_seen=parse_time("2026-11-02T00:00:00Z"),
        expires_at=parse_time("2027-01-30T00:00:00Z"),
        comments="seen in a campaign",
        tags=("sentinelone", "apt"),
    )
    with pytest.raises(InvalidIndicator, match="CIDR"):
        m.ioc_to_sighting(page["data"][1])
    assert m.next_cursor(page) is None
