"""STIX 2.1 mapping for the taxii adapter: patterns, indicators, envelopes (pure functions)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stix2validator import ValidationOptions, validate_instance

from ctd.adapters.taxii import mapping as tmap
from ctd.adapters.taxii.stix import (
    CTD_NAMESPACE,
    MalformedPattern,
    UnsupportedPattern,
    build_pattern,
    indicator_id,
    parse_pattern,
)
from ctd.model import ShareItem, parse_time

FEED = json.loads((Path(__file__).parent / "fixtures" / "taxii" / "feed.json").read_text())
NOW = parse_time("2026-01-01T00:00:00Z")


def item(type_: str, value: str, **kw) -> ShareItem:
    base: dict[str, Any] = dict(
        severity="high",
        reputation=7,
        tags=("phishing", "apt"),
        comments="seen in a campaign",
        reference="https://reports.example/1",
        first_seen=parse_time("2025-06-01T00:00:00Z"),
        last_seen=None,
        expires_at=parse_time("2026-06-01T00:00:00Z"),
        sources=("feed",),
    )
    base.update(kw)
    return ShareItem(type=type_, value=value, **base)


def indicator(pattern: str, **kw) -> dict:
    obj = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--9b1d3c26-5f3e-4c0a-9a3e-2f6a1e7c1a01",
        "created": "2025-01-01T00:00:00.000Z",
        "modified": "2025-02-01T00:00:00.000Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2025-01-01T00:00:00Z",
    }
    obj.update(kw)
    return obj


class TestParsePattern:
    @pytest.mark.parametrize(
        ("pattern", "expected"),
        [
            ("[url:value = 'http://a.example/x']", [("url", "http://a.example/x")]),
            ("[domain-name:value = 'a.example']", [("domain", "a.example")]),
            ("[ipv4-addr:value = '192.0.2.1']", [("ipv4", "192.0.2.1")]),
            ("[ipv4-addr:value = '192.0.2.0/24']", [("cidr4", "192.0.2.0/24")]),
            ("[ipv4-addr:value = '192.0.2.1/32']", [("ipv4", "192.0.2.1")]),
            ("[ipv6-addr:value = '2001:db8::/32']", [("cidr6", "2001:db8::/32")]),
            ("[ipv6-addr:value = '2001:db8::1']", [("ipv6", "2001:db8::1")]),
            ("[email-addr:value = 'a@b.example']", [("email", "a@b.example")]),
            ("[file:hashes.'SHA-256' = 'ab']", [("sha256", "ab")]),
            ("[file:hashes.MD5 = 'ab']", [("md5", "ab")]),
            ("[file:hashes.'SHA-1' = 'ab']", [("sha1", "ab")]),
        ],
    )
    def test_single_comparison_maps_to_one_value(self, pattern, expected):
        """One equality comparison on a supported object path yields that value with its ctd type."""
        assert parse_pattern(pattern) == expected

    def test_or_of_equalities_within_and_across_observations(self):
        """ORs inside one observation, across observations, IN sets and parentheses all list values."""
        p = (
            "([url:value = 'http://a.example/' OR domain-name:value = 'b.example'] OR "
            "[ipv4-addr:value IN ('192.0.2.1', '192.0.2.2')]) OR [(file:hashes.MD5 = 'cd')]"
        )
        assert parse_pattern(p) == [
            ("url", "http://a.example/"),
            ("domain", "b.example"),
            ("ipv4", "192.0.2.1"),
            ("ipv4", "192.0.2.2"),
            ("md5", "cd"),
        ]

    def test_escaped_quotes_and_backslashes_are_unescaped(self):
        """String literal escapes are the grammar's (\\' and \\\\), not regex guesses."""
        assert parse_pattern(r"[url:value = 'http://a.example/it\'s\\x']") == [("url", "http://a.example/it's\\x")]

    @pytest.mark.parametrize(
        "pattern",
        [
            "[url:value = 'http://a.example/' AND domain-name:value = 'b.example']",
            "[file:hashes.MD5 = 'ab' AND file:hashes.MD5 = 'cd']",
            "[domain-name:value = 'a.example' AND process:name = 'x.exe']",
            "[x509-certificate:hashes.'SHA-1' = 'ab']",
            "[network-traffic:dst_ref.type = 'mac-addr' AND network-traffic:dst_ref.value = '00:11:22:33:44:55']",
            "[email-message:to_refs[*].value = 'victim@corp.example']",
            "[url:value = 'http://a.example/'] AND [url:value = 'http://b.example/']",
            "[url:value = 'http://a.example/'] FOLLOWEDBY [url:value = 'http://b.example/']",
            "[url:value = 'http://a.example/'] WITHIN 60 SECONDS",
            "[url:value = 'http://a.example/'] REPEATS 2 TIMES",
            "[url:value = 'http://a.example/'] START t'2024-01-01T00:00:00Z' STOP t'2024-02-01T00:00:00Z'",
            "[process:name = 'evil.exe']",
            "[file:name = 'evil.exe']",
            "[url:value LIKE 'http://%.example/']",
            "[url:value MATCHES '^http']",
            "[url:value != 'http://a.example/']",
            "[url:value NOT = 'http://a.example/']",
            "[ipv4-addr:value ISSUBSET '192.0.2.0/24']",
            "[ipv4-addr:value NOT IN ('192.0.2.1')]",
            "[ipv4-addr:value = 3]",
        ],
    )
    def test_anything_but_a_list_of_values_is_unsupported(self, pattern):
        """ANDs of values, sequences, qualifiers, other objects and other operators are unsupported, not errors."""
        with pytest.raises(UnsupportedPattern):
            parse_pattern(pattern)

    @pytest.mark.parametrize("pattern", ["[url:value = 'x'", "url:value = 'x'", "[url:value = ]", ""])
    def test_syntax_errors_are_malformed(self, pattern):
        """A pattern the STIX 2.1 grammar rejects is malformed."""
        with pytest.raises(MalformedPattern):
            parse_pattern(pattern)

    @settings(deadline=None)  # the first parse builds ANTLR's DFA cache
    @given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60))
    def test_build_then_parse_round_trips_any_value(self, value):
        """Whatever the characters, a pattern ctd writes parses back to the same value."""
        assert parse_pattern(build_pattern("url", value)) == [("url", value)]


class TestMapIndicator:
    def test_fields_map_to_sighting(self):
        """confidence -> reputation, labels/indicator_types -> tags, valid_until -> expiry, name/desc. -> comments."""
        obj = indicator(
            "[url:value = 'HTTP://A.Example/x']",
            confidence=85,
            labels=["phishing"],
            indicator_types=["malicious-activity"],
            valid_until="2027-01-01T00:00:00Z",
            description="a phish",
            external_references=[{"source_name": "r", "url": "https://r.example/"}],
        )
        (s,), rejected = tmap.map_indicator(obj, NOW)
        assert rejected == []
        assert (s.type, s.value) == ("url", "http://a.example/x")
        assert s.reputation == 9
        assert s.tags == ("phishing", "malicious-activity")
        assert s.expires_at == parse_time("2027-01-01T00:00:00Z")
        assert s.first_seen == parse_time("2025-01-01T00:00:00Z")
        assert s.last_seen == parse_time("2025-02-01T00:00:00Z")
        assert (s.comments, s.reference, s.retracted) == ("a phish", "https://r.example/", False)

    @pytest.mark.parametrize(
        ("confidence", "reputation"),
        [
            (0, 1),
            (1, 1),
            (10, 1),
            (11, 2),
            (50, 5),
            (55, 6),
            (99, 10),
            (100, 10),
            (101, None),
            (-1, None),
            ("high", None),
            (None, None),
        ],
    )
    def test_confidence_scale(self, confidence, reputation):
        """Confidence 0..100 maps onto reputation 1..10; anything else leaves reputation unset."""
        assert tmap.confidence_to_reputation(confidence) == reputation

    def test_revoked_retracts(self):
        """A revoked indicator retracts its values for this source."""
        (s,), _ = tmap.map_indicator(indicator("[domain-name:value = 'a.example']", revoked=True), NOW)
        assert s.retracted

    def test_past_valid_until_retracts(self):
        """A version whose valid_until has passed retracts its values."""
        (s,), _ = tmap.map_indicator(
            indicator("[domain-name:value = 'a.example']", valid_until="2025-12-31T00:00:00Z"), NOW
        )
        assert s.retracted

    def test_invalid_value_rejected_others_kept(self):
        """A value that does not validate is rejected; the pattern's other values still map."""
        sightings, rejected = tmap.map_indicator(
            indicator("[ipv4-addr:value = '999.1.2.3' OR ipv4-addr:value = '192.0.2.4']"), NOW
        )
        assert [s.value for s in sightings] == ["192.0.2.4"]
        assert len(rejected) == 1 and "999.1.2.3" in rejected[0].where

    @pytest.mark.parametrize(
        ("obj", "kind"),
        [
            (indicator("[process:name = 'x']"), "unsupported_pattern"),
            (indicator("[file:name = 'x.exe']"), "unsupported_pattern"),
            (indicator("[email-message:subject MATCHES '^Invoice']"), "unsupported_pattern"),
            (indicator("rule x {}", pattern_type="yara"), "unsupported_pattern"),
            (indicator("[url:value = 'x'"), "malformed"),
            ({k: v for k, v in indicator("").items() if k != "pattern"}, "malformed"),
        ],
    )
    def test_unmappable_indicator_is_rejected_with_reason(self, obj, kind):
        """Unsupported patterns (counted unsupported) and malformed ones (invalid) are told apart, never raised."""
        sightings, (r,) = tmap.map_indicator(obj, NOW)
        assert sightings == [] and r.kind == kind and r.reason and r.where == obj["id"]

    def test_an_unreadable_time_is_a_field_warning(self):
        """A valid_from that is no timestamp is dropped with a field warning; the IoC is kept."""
        sightings, (r,) = tmap.map_indicator(
            indicator("[url:value = 'http://a.example/']", valid_from="yesterday"), NOW
        )
        assert [s.value for s in sightings] == ["http://a.example/"]
        assert (r.kind, r.reason) == ("field", "bad valid_from 'yesterday' (dropped)")

    def test_feed_fixture_maps_what_it_can(self):
        """The fixture feed: supported values ingest, the rest is counted, non-indicators are ignored."""
        sightings, rejected = tmap.map_objects(FEED, NOW)
        live = {(s.type, s.value) for s in sightings if not s.retracted}
        assert live == {
            ("url", "http://phish.example/login?a=1"),
            ("domain", "c2.example"),
            ("domain", "c2-backup.example"),
            ("cidr4", "198.51.100.0/24"),
            ("ipv4", "203.0.113.7"),
            ("ipv6", "2001:db8::1"),
            ("email", "ceo-fraud@bad.example"),
            ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
            ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            ("ipv4", "192.0.2.44"),
        }
        assert {s.value for s in sightings if s.retracted} == {"http://revoked.example/", "expired.example"}
        # the AND of a file's name and hash now maps its hash, which is no sha256: a malformed value
        assert sorted(r.kind for r in rejected) == ["malformed"] * 4 + ["unsupported_pattern"] * 3

    def test_broken_objects_are_counted(self):
        """Entries that are not STIX objects are rejected; a non-list envelope is one rejection."""
        _, rejected = tmap.map_objects([42, {"id": "x"}, FEED[0]], NOW)
        assert [r.where for r in rejected] == ["object #0", "object #1"]
        assert len(tmap.map_objects({"a": 1}, NOW)[1]) == 1


class TestToIndicator:
    OPTIONS = ValidationOptions(version="2.1")

    @pytest.mark.parametrize(
        ("type_", "value"),
        [
            ("url", "http://a.example/it's"),
            ("domain", "a.example"),
            ("hostname", "www.a.example"),
            ("ipv4", "192.0.2.1"),
            ("cidr4", "192.0.2.0/24"),
            ("ipv6", "2001:db8::1"),
            ("cidr6", "2001:db8::/32"),
            ("email", "a@b.example"),
            ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
            ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ],
    )
    def test_published_objects_pass_the_oasis_validator(self, type_, value):
        """Every indicator ctd produces, live or revoked, is valid STIX 2.1 (stix2-validator)."""
        for revoked in (False, True):
            obj = tmap.to_indicator(item(type_, value), modified_ms=1767225600123, revoked=revoked)
            result = validate_instance(obj, self.OPTIONS)
            assert result.is_valid, [str(e) for e in result.errors]

    def test_published_indicator_maps_back_to_the_same_ioc(self):
        """Pulling what ctd publishes yields the same value, reputation, tags and expiry."""
        it = item("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        (s,), _ = tmap.map_indicator(tmap.to_indicator(it, modified_ms=NOW * 1000), NOW)
        assert (s.type, s.value, s.reputation, s.expires_at) == (it.type, it.value, 7, it.expires_at)
        assert set(it.tags) <= set(s.tags)

    def test_versions_share_a_deterministic_id(self):
        """Re-sharing an IoC is a newer version of one object whose id is uuid5(ctd namespace, pattern)."""
        a = tmap.to_indicator(item("domain", "a.example"), modified_ms=NOW * 1000)
        b = tmap.to_indicator(item("domain", "a.example", reputation=3), modified_ms=NOW * 1000 + 1, revoked=True)
        assert a["id"] == b["id"] == indicator_id(a["pattern"])
        assert uuid.UUID(a["id"].split("--")[1]) == uuid.uuid5(CTD_NAMESPACE, "[domain-name:value = 'a.example']")
        assert (a["created"], a["modified"], b["modified"]) == (
            "2025-06-01T00:00:00.000Z",
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00.001Z",
        )
        assert b["revoked"] is True and "revoked" not in a

    def test_created_never_after_modified(self):
        """A first_seen later than the publication time is clamped so created <= modified."""
        obj = tmap.to_indicator(item("domain", "a.example", expires_at=None), modified_ms=1000)
        assert obj["created"] == obj["modified"] == obj["valid_from"] == "1970-01-01T00:00:01.000Z"
        assert "valid_until" not in obj

    def test_confidence_from_reputation(self):
        """Reputation 1..10 publishes as confidence 10..100."""
        assert tmap.to_indicator(item("domain", "a.example", reputation=10), modified_ms=0)["confidence"] == 100


class TestEnvelopes:
    def test_split_within_limit(self):
        """Objects are packed into envelopes no larger than max_content_length, in order."""
        objs = [(f"id{i}", tmap.encode({"n": i, "pad": "x" * 50})) for i in range(10)]
        batches, too_big = tmap.envelopes(objs, 200)
        assert too_big == []
        assert [k for keys, _ in batches for k in keys] == [f"id{i}" for i in range(10)]
        for keys, body in batches:
            assert len(body) <= 200
            assert [o["n"] for o in json.loads(body)["objects"]] == [int(k[2:]) for k in keys]

    def test_oversized_object_is_set_aside(self):
        """An object larger than any envelope can hold is reported, the rest still goes."""
        batches, too_big = tmap.envelopes([("a", b"{}"), ("b", b"{" + b" " * 500 + b"}")], 100)
        assert too_big == ["b"] and [keys for keys, _ in batches] == [["a"]]

    def test_status_failures(self):
        """A status resource's failures become per-object reasons."""
        status = {
            "status": "complete",
            "failures": [{"id": "indicator--1", "version": "v", "message": "dup"}, {"id": "indicator--2"}, "junk"],
        }
        assert tmap.status_failures(status) == {"indicator--1": "dup", "indicator--2": "rejected by the TAXII server"}


class TestRealProducers:
    """Patterns real producers emit (issue 12 finding 3): MISP's STIX 2.1 export and the OASIS examples."""

    @pytest.mark.parametrize(
        ("pattern", "expected"),
        [
            # MISP file object: each hash of one file is its own IoC; the name only qualifies it.
            (
                "[file:hashes.MD5 = '93bd5e209b3b048fa37073d7890c44d9' AND "
                "file:hashes.'SHA-1' = 'da79764ed539c57542c523c28c878f6377c258a6' AND "
                "file:hashes.'SHA-256' = '2e376f05023790d577a4d2e110640410c9d65c145d2d02e207ff07c3271ea095' AND "
                "file:name = 'AgentTesla_payload.exe']",
                [
                    ("md5", "93bd5e209b3b048fa37073d7890c44d9"),
                    ("sha1", "da79764ed539c57542c523c28c878f6377c258a6"),
                    ("sha256", "2e376f05023790d577a4d2e110640410c9d65c145d2d02e207ff07c3271ea095"),
                ],
            ),
            # MISP malware-sample: name, hash and the zipped sample in parentheses.
            (
                "[file:hashes.MD5 = '0cdc9b1b45064e6315f83b150c0fc0eb' AND file:name = 'bin.exe' AND "
                "(file:content_ref.x_misp_filename = 'bin.exe' AND file:content_ref.mime_type = 'application/zip')]",
                [("md5", "0cdc9b1b45064e6315f83b150c0fc0eb")],
            ),
            # MISP domain|ip, OASIS: what a domain resolves to only qualifies it.
            (
                "[domain-name:value = 'c2.example.net' AND domain-name:resolves_to_refs[*].value = '198.51.100.21']",
                [("domain", "c2.example.net")],
            ),
            # MISP ip-dst and ip-dst|port: the traffic's destination address, typed by dst_ref.type.
            (
                "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '198.51.100.33' "
                "AND network-traffic:dst_port = '8443']",
                [("ipv4", "198.51.100.33")],
            ),
            (
                "[(network-traffic:src_ref.type = 'ipv6-addr' AND network-traffic:src_ref.value = '2001:db8::7')]",
                [("ipv6", "2001:db8::7")],
            ),
            ("[network-traffic:dst_ref.value = '203.0.113.0/24']", [(None, "203.0.113.0/24")]),
            # MISP hostname|port: the domain, its port dropped as everywhere in ctd.
            (
                "[domain-name:value = 'update.example.org' AND network-traffic:dst_port = '443']",
                [("domain", "update.example.org")],
            ),
            # MISP email-src.
            ("[email-message:from_ref.value = 'billing@phish.example.com']", [("email", "billing@phish.example.com")]),
            # OASIS: a hash qualified by a MIME type.
            ("[file:hashes.'SHA-256' = 'aec0' AND file:mime_type = 'application/x-pdf']", [("sha256", "aec0")]),
            # A file hash OR'ed with a qualified domain: both alternatives reduce.
            (
                "[file:hashes.MD5 = 'ab' OR (domain-name:value = 'x.example' AND domain-name:value LIKE '%.example')]",
                [("md5", "ab"), ("domain", "x.example")],
            ),
        ],
    )
    def test_one_object_reduces_to_its_values(self, pattern, expected):
        """An object whose other comparisons only qualify it gives its primary value(s)."""
        assert parse_pattern(pattern) == expected

    def test_or_keeps_what_reduces_and_reports_the_rest(self):
        """In an OR, the alternatives that name values are kept; the others are reported as skipped."""
        from ctd.adapters.taxii.stix import reduce_pattern

        reduced = reduce_pattern("[url:value = 'http://a.example/' OR file:name = 'x.exe']")
        assert reduced.terms == [("url", "http://a.example/")]
        assert reduced.skipped == ["no IoC value ctd holds (file:name =)"]
        sightings, (r,) = tmap.map_indicator(indicator("[url:value = 'http://a.example/' OR file:name = 'x.exe']"), NOW)
        assert [s.value for s in sightings] == ["http://a.example/"] and r.kind == "unsupported_pattern"

    def test_an_address_by_value_is_an_ip_or_a_domain(self):
        """A dst_ref.value without its type is read by its value: an address, a network or a domain name."""
        got = tmap.map_indicator(
            indicator(
                "[network-traffic:dst_ref.value = '203.0.113.0/24' OR network-traffic:dst_ref.value = 'c2.example']"
            ),
            NOW,
        )
        assert [(s.type, s.value) for s in got[0]] == [("cidr4", "203.0.113.0/24"), ("domain", "c2.example")]

    def test_x509_and_matches_are_unsupported_not_invalid(self):
        """Certificate hashes, MATCHES and a file name alone are counted as unsupported patterns, never as invalid."""
        for pattern in (
            "[x509-certificate:hashes.'SHA-1' = '6e6187d58483457f86eae49315a0a72d7543459a']",
            "[email-message:subject MATCHES '^[IMPORTANT] Please Review Before']",
            "[file:name = 'foo.dll' AND file:parent_directory_ref.path = 'C:\\\\Windows\\\\System32']",
        ):
            _, (r,) = tmap.map_indicator(indicator(pattern), NOW)
            assert r.kind == "unsupported_pattern", pattern
