"""Pure mapping of the mimecast adapter: logs/feed -> sightings, items -> bodies, fail[] -> reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctd.adapters.mimecast import mapping as m
from ctd.model import Rejected, ShareItem, Sighting, parse_time

FIX = Path(__file__).parent / "fixtures" / "mimecast"


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


def test_click_logs_map_to_url_sightings_with_rejections():
    """Malicious clicks become url sightings; clean clicks and bad URLs are rejected with reasons."""
    sightings, rejected = m.parse_click_logs(load("click_logs.json"))
    at = parse_time("2026-11-20T10:15:00Z")
    assert sightings == [
        Sighting(
            type="url",
            value="https://evil.example/Login?x=1",
            first_seen=at,
            last_seen=at,
            severity="high",
            tags=("mimecast", "Phishing & Fraud"),
            comments="URL Protect: block (Default URL Protect)",
        )
    ]
    assert rejected == [
        Rejected(where="click log 1", reason="scanResult 'clean' is not a detection"),
        Rejected(where="click log 2", reason="contains whitespace U+0020 at offset 3"),
    ]


def test_next_page_token_from_meta_pagination():
    """The next page token is meta.pagination.next; a last page has none."""
    assert m.next_page_token(load("click_logs.json")) == "eyJvZmZzZXQiOjN9"
    assert m.next_page_token(load("attachment_logs.json")) is None
    assert m.next_page_token(None) is None


def test_attachment_logs_map_to_sha256_sightings():
    """A malicious attachment's fileHash becomes a sha256 sighting; a safe one is rejected."""
    sightings, rejected = m.parse_attachment_logs(load("attachment_logs.json"))
    at = parse_time("2026-11-21T08:00:00Z")
    assert sightings == [
        Sighting(
            type="sha256",
            value="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b856",
            first_seen=at,
            last_seen=at,
            severity="high",
            tags=("mimecast", "attachment"),
            comments="invoice.docm from mallory@evil.example",
        )
    ]
    assert rejected == [Rejected(where="attachment log 1", reason="result 'safe' is not a detection")]


def test_feed_csv_gives_md5_and_sha256_per_row():
    """Each feed row yields its MD5 and SHA256; bad hashes and empty rows are rejected by line."""
    sightings, rejected = m.parse_feed(load("feed.json")["csv"])
    at = parse_time("2026-11-22T09:00:00Z")
    common = dict(
        first_seen=at,
        last_seen=at,
        severity="high",
        tags=("mimecast", "malware"),
        comments="sent from mallory@evil.example",
    )
    assert sightings == [
        Sighting(type="md5", value="0cc175b9c0f1b6a831c399e269772661", **common),
        Sighting(type="sha256", value="ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb", **common),
    ]
    assert rejected == [
        Rejected(where="feed line 3", reason="MD5: not a valid md5 (expected 32 hex digits)"),
        Rejected(where="feed line 4", reason="no MD5 or SHA256"),
    ]


def test_managed_url_bodies_for_urls_and_domains():
    """URLs are explicit matches, domains and hostnames whole-domain matches; the comment names the sources."""
    assert m.managed_url(Item(type="url", value="https://evil.example/login", comments="kit")) == {
        "url": "https://evil.example/login",
        "action": "block",
        "matchType": "explicit",
        "comment": "kit (shared by ctd from misp)",
        "disableLogClick": False,
    }
    assert m.managed_url(Item(type="hostname", value="www.evil.example", sources=()), action="permit") == {
        "url": "www.evil.example",
        "action": "permit",
        "matchType": "domain",
        "comment": "shared by ctd",
        "disableLogClick": False,
    }


@pytest.mark.parametrize(
    ("type_", "value", "reason"),
    [
        ("sha256", "a" * 64, "Mimecast Managed URLs take URLs and domains, not sha256"),
        ("ipv4", "192.0.2.1", "Mimecast Managed URLs take URLs and domains, not ipv4"),
        ("email", "x@evil.example", "Mimecast Managed URLs take URLs and domains, not email"),
        ("url", "https://evil.example/#top", "Mimecast Managed URLs refuse a URL with a fragment (#)"),
    ],
)
def test_managed_url_refusals(type_, value, reason):
    """What Managed URLs cannot take is refused with a reason."""
    assert m.managed_url_refusal(Item(type=type_, value=value)) == reason


def test_senders_take_email_addresses_only():
    """Blocked senders are email addresses, one (sender, recipient) pair each; domains are refused."""
    assert m.sender_refusal(Item(type="email", value="bad@evil.example")) is None
    assert (
        m.sender_refusal(Item(type="domain", value="evil.example"))
        == "Mimecast managed senders take an email address, not domain"
    )
    assert m.managed_sender(Item(type="email", value="bad@evil.example"), to="ceo@corp.example") == {
        "sender": "bad@evil.example",
        "to": "ceo@corp.example",
        "action": "block",
    }


def test_fail_entries_map_to_value_reasons():
    """Each fail[] entry names its value through key; the reason is its errors' messages."""
    sent = [{"url": "https://evil.example/login"}, {"url": "bad url"}, {"url": "dup.example"}]
    assert m.failures(load("create_managed_url_partial.json"), sent, "url") == {
        "bad url": "Invalid URL",
        "dup.example": "This URL is already managed",
    }


def test_request_level_failure_applies_to_every_item():
    """A fail entry without a key (the whole call refused) gives every sent value its reason."""
    body = {"meta": {"status": 403}, "data": [], "fail": [{"errors": [{"code": "err_forbidden", "message": "No"}]}]}
    assert m.failures(body, [{"url": "a.example"}, {"url": "b.example"}], "url") == {
        "a.example": "No",
        "b.example": "No",
    }


def test_managed_url_ids_match_explicit_urls_and_domains():
    """Listing entries are matched back to the values ctd sent (URL with port/query, or bare domain)."""
    listing = load("get_all_managed_urls.json")
    assert m.managed_url_ids(
        listing, ["https://evil.example/login", "bad.example", "https://other.example:8443/x?a=1", "absent.example"]
    ) == {
        "https://evil.example/login": "mURL00000001",
        "bad.example": "mURL00000002",
        "https://other.example:8443/x?a=1": "mURL00000003",
    }


def test_regions_and_dates():
    """The global gateway is the default region; request dates use +0000."""
    assert m.REGIONS["global"] == "https://api.services.mimecast.com"
    assert m.stamp(0) == "1970-01-01T00:00:00+0000" and m.parse_date("1970-01-01T00:00:10+0000") == 10
