"""Pure mapping of the defender adapter: items -> indicators, import replies -> reasons, alerts -> sightings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctd.adapters.defender import mapping as m
from ctd.model import Rejected, ShareItem, Sighting, parse_time

FIX = Path(__file__).parent / "fixtures" / "defender"


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
        ("md5", "FileMd5"),
        ("sha1", "FileSha1"),
        ("sha256", "FileSha256"),
        ("ipv4", "IpAddress"),
        ("ipv6", "IpAddress"),
        ("domain", "DomainName"),
        ("hostname", "DomainName"),
        ("url", "Url"),
    ],
)
def test_types_map_to_indicator_types(type_, kind):
    """Each ctd type Defender knows maps to its indicatorType."""
    assert m.refusal(Item(type=type_, value="v"), "Block") is None
    assert m.indicator(Item(type=type_, value="v"), action="Block")["indicatorType"] == kind


@pytest.mark.parametrize(
    ("type_", "reason"),
    [
        ("email", "Defender for Endpoint indicators have no email type"),
        ("cidr4", "Defender for Endpoint indicators do not support CIDR notation for IPs"),
        ("cidr6", "Defender for Endpoint indicators do not support CIDR notation for IPs"),
    ],
)
def test_email_and_cidr_are_refused(type_, reason):
    """Email and CIDR items are refused with a reason."""
    assert m.refusal(Item(type=type_, value="v"), "Block") == reason


def test_unknown_action_is_refused():
    """An action outside Defender's list is refused before sending."""
    assert m.refusal(Item(type="md5", value="v"), "Quarantine") == "unknown Defender action 'Quarantine'"


def test_indicator_body():
    """The body carries value, type, action, ctd's application mark, title, description, severity, expiry."""
    item = Item(
        type="domain",
        value="evil.example",
        severity="critical",
        comments="phish kit",
        expires_at=parse_time("2026-12-01T00:00:00Z"),
    )
    assert m.indicator(item, action="Block", generate_alert=False, rbac_groups=("Servers",)) == {
        "indicatorValue": "evil.example",
        "indicatorType": "DomainName",
        "action": "Block",
        "application": "ctd",
        "title": "ctd: evil.example",
        "description": "phish kit (shared by ctd from misp)",
        "severity": "High",
        "generateAlert": False,
        "rbacGroupNames": ["Servers"],
        "expirationTime": "2026-12-01T00:00:00Z",
    }


def test_audit_forces_generate_alert_and_default_expiry_applies():
    """Audit always generates alerts; an item without expiry gets the default one; unknown is Informational."""
    body = m.indicator(
        Item(type="md5", value="a" * 32, severity="unknown", sources=()),
        action="Audit",
        generate_alert=False,
        default_expiry=0,
    )
    assert (body["generateAlert"], body["expirationTime"], body["severity"], body["description"]) == (
        True,
        "1970-01-01T00:00:00Z",
        "Informational",
        "shared by ctd",
    )


def test_import_failures_name_values_and_the_tenant_cap():
    """Failed rows map value -> failureReason; the 15,000 cap is named as such."""
    assert m.import_failures(load("import_partial.json"), []) == {
        "evil..example": "Domain name evil..example is invalid.",
        "192.0.2.7": "Defender tenant limit of 15,000 active indicators: "
        "The tenant reached the limit of 15000 active indicators.",
    }


def test_whole_request_error_reason():
    """A 400/403 error envelope becomes one reason text."""
    body = {"error": {"code": "MaximumBatchSizeExceeded", "message": "Maximum batch size exceeded.", "target": "x"}}
    assert m.error_reason(body) == "MaximumBatchSizeExceeded: Maximum batch size exceeded."


def test_indicators_page_to_sightings_ids_and_next_link():
    """Listed indicators map to sightings (Allowed withdraws); ids map back for BatchDelete; nextLink pages."""
    page = load("indicators_page.json")
    s = m.indicator_to_sighting(page["value"][0])
    assert s == Sighting(
        type="ipv4",
        value="12.13.14.15",
        first_seen=parse_time("2018-10-24T11:15:35Z"),
        last_seen=parse_time("2019-10-24T10:54:23Z"),
        severity="unknown",
        comments="test",
        expires_at=parse_time("2020-12-12T00:00:00Z"),
        tags=("defender",),
    )
    allowed = m.indicator_to_sighting(page["value"][1])
    assert (allowed.type, allowed.severity, allowed.retracted, allowed.comments) == ("sha1", "high", True, "test")
    with pytest.raises(Exception, match="CertificateThumbprint"):
        m.indicator_to_sighting(page["value"][2])
    assert m.ids_for(page, {"12.13.14.15", "absent"}) == {"12.13.14.15": "995"}
    assert m.next_link(page) == "https://api.securitycenter.microsoft.com/api/indicators?$top=3&$skip=3"
    assert m.next_link({"value": []}) is None


def test_alert_evidence_to_sightings():
    """Process/File evidence gives sha256+sha1 sightings with the alert's times, severity and link."""
    alert = load("alerts_evidence.json")["value"][0]
    sightings, rejected = m.alert_to_sightings(alert)
    base = dict(
        first_seen=parse_time("2021-01-26T20:33:57Z"),
        last_seen=parse_time("2021-01-26T20:33:59Z"),
        tags=("defender", "Execution"),
        severity="low",
        comments="Low-reputation arbitrary code executed by signed executable",
        reference="https://security.microsoft.com/alerts/da637472900382838869_1364969609",
    )
    assert sightings == [
        Sighting(type="sha256", value="a4752c71d81afd3d5865d24ddb11a6b0c615062fcc448d24050c2172d2cbccd6", **base),
        Sighting(type="sha1", value="ff836cfb1af40252bd2a2ea843032e99a5b262ed", **base),
        Sighting(type="sha256", value="dc0ade0c95d6db98882bc8fa6707e64353cd6f7767ff48d6a81a6c2aef21c608", **base),
        Sighting(type="sha1", value="8563f95b2f8a284fc99da44500cd51a77c1ff36c", **base),
    ]
    assert rejected == []


def test_false_positive_alert_withdraws_and_bad_evidence_is_rejected():
    """A FalsePositive alert's IP/URL evidence comes back retracted; an invalid IP is rejected."""
    sightings, rejected = m.alert_to_sightings(load("alerts_evidence.json")["value"][1])
    assert [(s.type, s.value, s.retracted, s.severity) for s in sightings] == [
        ("ipv4", "203.0.113.9", True, "high"),
        ("url", "http://c2.example/beacon", True, "high"),
    ]
    assert sightings[0].tags == ("defender", "CommandAndControl", "Meterpreter")
    assert rejected == [Rejected(where="alert da2", reason="evidence ipv4: not a valid ipv4 address")]


def test_alert_without_indicators_is_rejected():
    """An alert whose evidence holds no hash, IP or URL is reported, not silently dropped."""
    assert m.alert_to_sightings(load("alerts_evidence.json")["value"][2]) == (
        [],
        [Rejected(where="alert da3", reason="no hash, IP or URL in the evidence")],
    )


def test_token_url_scope_and_own_filter():
    """The token comes from the tenant's v2.0 endpoint with the API's .default scope; ctd lists its own."""
    assert m.token_url("t1") == "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    assert m.SCOPE == "https://api.securitycenter.microsoft.com/.default"
    assert m.own_filter() == "application eq 'ctd'" and m.odata_quote("o'k") == "'o''k'"
