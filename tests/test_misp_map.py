"""MISP mapping: attributes to sightings, request bodies, indicators to attributes, save-failure replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctd.adapters.misp import mapping as m
from ctd.adapters.misp.adapter import MispConfig
from ctd.model import ShareItem
from tests.configutil import decode_options

FIX = Path(__file__).parent / "fixtures" / "misp"
BASE = "https://misp.example"


def load(name: str):
    return json.loads((FIX / name).read_text())


def attrs() -> dict[str, dict]:
    return {a["id"]: a for a in m.attributes_of(load("restsearch_attributes.json"))}


def mapped(aid: str, **kw):
    opts = {"base_url": BASE, "export_tag": "ctd", "to_ids_only": True, **kw}
    return m.map_attribute(attrs()[aid], **opts)


def cfg(**kw) -> MispConfig:
    return decode_options({"url": BASE, "api_key": "k", **kw}, MispConfig)


def item(value: str, typ: str = "domain", sources: tuple[str, ...] = ("edr",)) -> ShareItem:
    return ShareItem(
        type=typ,
        value=value,
        severity="unknown",
        reputation=5,
        tags=(),
        comments="seen",
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=sources,
    )


def test_ip_dst_maps_by_address_family_with_reference_tags_and_comment():
    """An ip-dst attribute becomes an ipv4 sighting with the event link, its tags, category tag and comment."""
    (s,), rejected = mapped("101")
    assert rejected == []
    assert (s.type, s.value) == ("ipv4", "203.0.113.7")
    assert s.reference == f"{BASE}/events/view/7"
    assert s.tags == ("tlp:green", "misp-category:Network activity")
    assert s.comments == "C2 server"
    assert s.last_seen == 1_800_000_000


def test_decay_score_becomes_reputation():
    """A decay score of 54.3 (0-100) becomes reputation 6 (1-10)."""
    (s,), _ = mapped("101")
    assert s.reputation == 6


@pytest.mark.parametrize(("score", "rep"), [(0, 1), (0.5, 1), (10, 1), (10.1, 2), (100, 10), (250, 10)])
def test_decay_scale_bounds(score, rep):
    """Decay scores map onto 1..10 and never outside it."""
    assert m.decay_reputation({"decay_score": [{"score": score}]}) == rep


def test_no_decay_score_leaves_reputation_to_the_default():
    """Without a decay score the sighting carries no reputation (the plugin's or ctd's default applies)."""
    got, _ = mapped("103")
    assert got and all(s.reputation is None for s in got)


def test_ip_port_composite_maps_to_the_ip():
    """``ip-src|port`` yields the address alone (canonical IPv6), with the attribute's first_seen."""
    (s,), _ = mapped("102")
    assert (s.type, s.value) == ("ipv6", "2001:db8::1")
    assert s.first_seen == 1_798_761_600


def test_domain_ip_splits_into_two_indicators():
    """``domain|ip`` yields a domain and an ipv4, both canonical."""
    got, _ = mapped("103")
    assert [(s.type, s.value) for s in got] == [("domain", "evil.example"), ("ipv4", "198.51.100.9")]


def test_filename_hash_keeps_the_hash_and_deleted_means_retracted():
    """``filename|sha256`` yields the lower-cased hash even if the file name has a '|'; deleted retracts it."""
    (s,), _ = mapped("104")
    assert s.type == "sha256" and s.value == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert s.retracted


def test_export_tagged_attribute_is_skipped():
    """An attribute carrying ctd's export tag is never read back (loop prevention)."""
    assert mapped("105") == ([], [])


def test_another_export_tag_is_not_skipped():
    """Only the configured export tag excludes an attribute."""
    got, _ = mapped("105", export_tag="other")
    assert [(s.type, s.value) for s in got] == [("url", "http://exported.example/x")]


def test_not_for_ids_is_skipped_unless_to_ids_is_off():
    """``to_ids: false`` attributes are skipped when the plugin wants IDS attributes only."""
    assert mapped("106") == ([], [])
    got, _ = mapped("106", to_ids_only=False)
    assert [(s.type, s.value) for s in got] == [("hostname", "benign.example")]


def test_invalid_value_is_rejected_with_its_attribute_id():
    """A value that does not validate for its type is a Rejected naming the attribute."""
    got, (r,) = mapped("107")
    assert got == []
    assert r.where == "attribute 107" and "not-an-ip" in r.reason


@pytest.mark.parametrize(
    ("mtype", "value", "expected"),
    [
        ("ip-dst", "10.0.0.0/8", ("cidr4", "10.0.0.0/8")),
        ("hostname|port", "Mail.Example|25", ("hostname", "mail.example")),
        ("email-src", "Bad@Example.COM", ("email", "Bad@example.com")),
        ("malware-sample", "x.exe|D41D8CD98F00B204E9800998ECF8427E", ("md5", "d41d8cd98f00b204e9800998ecf8427e")),
        ("url", "hxxp://evil[.]example/a", ("url", "http://evil.example/a")),
    ],
)
def test_type_mapping(mtype, value, expected):
    """Each supported MISP type maps to its ctd type with a canonical value."""
    got, _ = m.map_attribute(
        {"id": "1", "type": mtype, "value": value, "to_ids": True, "event_id": "1"},
        base_url=BASE,
        export_tag="ctd",
        to_ids_only=True,
    )
    assert [(s.type, s.value) for s in got] == [expected]


def test_unsupported_type_is_ignored():
    """An attribute type ctd has no indicator for (e.g. ``text``) yields nothing and no rejection."""
    assert m.map_attribute(
        {"id": "1", "type": "text", "value": "x", "to_ids": True}, base_url=BASE, export_tag="ctd", to_ids_only=True
    ) == ([], [])


def test_empty_search_reply_forms():
    """Both an empty attribute list and an empty response list mean no attributes."""
    assert m.attributes_of({"response": {"Attribute": []}}) == []
    assert m.attributes_of({"response": []}) == []


@pytest.mark.parametrize("payload", [{"response": {"Event": []}}, {"response": {"Attribute": [1]}}, "x", None])
def test_malformed_search_reply_raises(payload):
    """Anything but an attribute list is a ValueError."""
    with pytest.raises(ValueError):
        m.attributes_of(payload)


def test_restsearch_body_defaults():
    """The default body asks for IDS attributes of supported types, excludes the export tag, includes deletions."""
    body = m.restsearch_body(cfg(), page=3, start=10, end=20)
    assert body["returnFormat"] == "json" and body["limit"] == 1000 and body["page"] == 3
    assert body["attribute_timestamp"] == [10, 20]
    assert body["type"] == list(m.PULL_TYPES)
    assert body["tags"] == ["!ctd"]
    assert body["deleted"] == [0, 1] and body["to_ids"] == 1 and body["enforceWarninglist"] == 1
    assert "published" not in body and "includeDecayScore" not in body and "category" not in body


def test_restsearch_body_filters_and_decay():
    """Filters and decay options reach the body under MISP's names; user tags keep their '!' negation."""
    c = cfg(
        types=["url"],
        categories=["Network activity"],
        filter_tags=["tlp:white", "!false-positive"],
        to_ids=False,
        published=True,
        enforce_warninglist=False,
        decaying_model=[2],
        score_threshold=40,
        export_tag="mine",
    )
    body = m.restsearch_body(c, page=1, start=0, end=1)
    assert body["type"] == ["url"] and body["category"] == ["Network activity"]
    assert body["tags"] == ["tlp:white", "!false-positive", "!mine"]
    assert "to_ids" not in body and body["published"] == 1 and body["enforceWarninglist"] == 0
    assert body["includeDecayScore"] == 1 and body["excludeDecayed"] == 1
    assert body["decayingModel"] == [2] and body["modelOverrides"] == {"threshold": 40}


def test_include_decay_score_alone_does_not_exclude():
    """``include_decay_score`` asks for scores without dropping decayed attributes."""
    body = m.restsearch_body(cfg(include_decay_score=True), page=1, start=0, end=1)
    assert body["includeDecayScore"] == 1 and "excludeDecayed" not in body


@pytest.mark.parametrize(
    ("typ", "value", "mtype", "category"),
    [
        ("url", "http://a.example/x", "url", "Network activity"),
        ("ipv4", "192.0.2.1", "ip-dst", "Network activity"),
        ("ipv6", "2001:db8::2", "ip-dst", "Network activity"),
        ("cidr4", "192.0.2.0/24", "ip-dst", "Network activity"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e", "md5", "Payload delivery"),
        ("email", "a@b.example", "email-dst", "Network activity"),
    ],
)
def test_push_type_mapping(typ, value, mtype, category):
    """ctd types map back to MISP types and categories; a CIDR goes into ip-dst as is."""
    a = m.to_attribute(item(value, typ), "ctd")
    assert (a["type"], a["category"], a["value"], a["to_ids"]) == (mtype, category, value, True)


def test_pushed_attribute_carries_export_and_source_tags():
    """Every pushed attribute is tagged with the export tag and a source tag naming ctd's sources."""
    a = m.to_attribute(item("a.example", sources=("edr", "feed")), "ctd")
    assert [t["name"] for t in a["Tag"]] == ["ctd", 'ctd:source="edr,feed"']
    assert a["comment"] == "seen" and a["distribution"] == 5


def test_source_tag_fits_misp_tag_limit():
    """A source tag over 255 characters is shortened and stays well-formed."""
    tag = m.source_tag("ctd", tuple(f"source-{i:03d}" for i in range(100)))
    assert len(tag) == 255 and tag.startswith('ctd:source="source-000,') and tag.endswith('..."')


def test_partial_add_reply_names_refused_indexes():
    """A 200 with ``errors`` maps ``attribute_<i>`` to the i-th attribute sent, with MISP's reason."""
    sent = [{}] * 4
    fails = m.add_failures(load("add_partial.json"), sent)
    assert sorted(fails) == [1, 3]
    assert m.is_duplicate(fails[1]) and not m.is_duplicate(fails[3])
    assert fails[3].startswith("value: Value not in the right type/format")


def test_total_failure_reply_is_a_save_failure_not_auth():
    """A 403 ``saved: false`` reply is a save failure; MISP's auth error is not."""
    assert m.is_save_failure(load("add_all_failed.json"))
    assert not m.is_save_failure(load("auth_failed.json"))
    assert m.add_failures(load("add_all_failed.json"), [{}, {}]).keys() == {0, 1}


def test_single_attribute_failure_has_errors_directly():
    """For one attribute, MISP puts its field errors directly under ``errors``."""
    body = {"saved": False, "errors": {"value": ["Value cannot be empty."]}}
    assert m.add_failures(body, [{}]) == {0: "value: Value cannot be empty."}


def test_no_errors_means_no_failures():
    """A clean add reply refuses nothing."""
    assert m.add_failures({"Attribute": {"id": "1"}}, [{}]) == {}
    assert m.add_failures(None, [{}]) == {}
