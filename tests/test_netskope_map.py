"""The ``netskope`` adapter's pure mapping: alerts, iterator decisions, tenant replies."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ctd.adapters.netskope import mapping as nm

FIXTURES = Path(__file__).parent / "fixtures" / "netskope"
NOW = 1_800_000_000


def page(name: str) -> list:
    return json.loads((FIXTURES / name).read_text())["result"]


def mapped(kind: str, name: str, **kw):
    return nm.alert_sightings(kind, page(name), "acme", **kw)


# --- alerts -----------------------------------------------------------------------


def test_malware_alert_gives_md5_and_sha256_both_when_they_differ():
    """A malware alert maps md5/local_md5 and sha256/local_sha256, one sighting per distinct value."""
    sightings, _ = mapped("malware", "malware_page.json")
    first = [(s.type, s.value) for s in sightings if "invoice" in s.comments]
    assert first == [
        ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
        ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("sha256", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ]


def test_hash_types_select_which_hashes_are_kept():
    """``hash_types = ["sha256"]`` drops MD5s without counting them as invalid."""
    sightings, rejected = mapped("malware", "malware_page.json", hash_types=("sha256",))
    assert {s.type for s in sightings} == {"sha256"}
    assert [r.reason for r in rejected] == ["no file hash"]


def test_malware_severity_timestamp_and_comment():
    """Severity is the alert's lowercased severity; both times are the alert timestamp; the comment has the context."""
    sightings, _ = mapped("malware", "malware_page.json")
    s = sightings[0]
    assert (s.severity, s.first_seen, s.last_seen) == ("high", 1799990000, 1799990000)
    assert s.comments == (
        "Netskope acme malware alert; Malware detected in download; file: invoice.pdf.exe; "
        "malware: Trojan.GenericKD; malware type: Trojan"
    )


def test_unknown_severity_and_millisecond_timestamps():
    """An unknown severity maps to ``unknown``; a millisecond timestamp is read as seconds."""
    sightings, _ = mapped("malware", "malware_page.json")
    s = next(x for x in sightings if x.value == "0123456789abcdef0123456789abcdef")
    assert s.severity == "unknown" and s.first_seen == 1799991000


def test_invalid_hash_and_missing_hash_are_rejected_with_reasons():
    """A malformed hash and an alert without hashes are rejected; the rest of the page still maps."""
    sightings, rejected = mapped("malware", "malware_page.json")
    assert len(sightings) == 5
    assert [r.where for r in rejected] == ["malware alert 2 (md5)", "malware alert 3"]


def test_malsite_alert_gives_canonical_url_with_category():
    """A malsite alert maps its url (canonicalized, refanged) with the categories in the comment."""
    sightings, rejected = mapped("malsite", "malsite_page.json")
    assert [(s.type, s.value, s.severity) for s in sightings] == [
        ("url", "http://login.evil.example/Path?a=1", "medium"),
        ("url", "https://bad.example.net/x", "critical"),
    ]
    assert sightings[0].comments == "Netskope acme malsite alert; Malsite blocked; category: Phishing, Malware"
    assert sightings[1].first_seen == 1799996000
    assert len(rejected) == 1 and "host" in rejected[0].reason


def test_non_object_alert_is_rejected():
    """A page item that is not an object is rejected, not a crash."""
    sightings, rejected = nm.alert_sightings("malsite", ["oops", None], "acme")
    assert sightings == [] and len(rejected) == 2


@given(st.lists(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.text())), max_size=5))
def test_alert_mapping_never_crashes(items):
    """Arbitrary page items map to sightings or rejections, never an exception."""
    for kind in nm.ALERT_TYPES:
        nm.alert_sightings(kind, items, "t")


def test_default_index_is_unique_per_plugin_and_safe():
    """The iterator index is derived from the plugin name, with unsafe characters replaced."""
    assert nm.default_index("ns prod/1") == "ctd_ns_prod_1"
    assert nm.default_index("a") != nm.default_index("b")


# --- the iterator -------------------------------------------------------------------


def test_resume_repeats_an_unanswered_seek_and_resends_otherwise():
    """A committed seek is repeated; any other committed position resumes with ``resend``."""
    assert nm.resume_operation({"index": "i", "type": "malware", "seek": 1700000000}, "malware", "i") == "1700000000"
    assert nm.resume_operation({"index": "i", "type": "malware", "seek": None}, "malware", "i") == "resend"
    assert nm.resume_operation({"index": "other", "type": "malware"}, "malware", "i") is None
    assert nm.resume_operation({"index": "i", "type": "malsite"}, "malware", "i") is None
    assert nm.resume_operation(None, "malware", "i") is None


def test_empty_page_at_the_head_ends_the_pull():
    """An empty page whose high-water mark is recent ends the pull; a page with alerts never does."""
    assert nm.page_ends_pull([], NOW - 30, None, NOW)
    assert nm.page_ends_pull([], None, None, NOW)
    assert not nm.page_ends_pull([{}], NOW - 30, None, NOW)


def test_empty_page_of_a_quiet_past_window_continues_while_moving():
    """An empty page far behind "now" continues, unless its mark stopped moving."""
    assert not nm.page_ends_pull([], NOW - 86400, None, NOW)
    assert not nm.page_ends_pull([], NOW - 80000, NOW - 86400, NOW)
    assert nm.page_ends_pull([], NOW - 86400, NOW - 86400, NOW)


# --- pushing ------------------------------------------------------------------------------


def test_rejected_values_from_a_400_message():
    """A 400's ``message`` names rejected values with reasons; values we did not send are ignored."""
    body = json.loads((FIXTURES / "urllist_400.json").read_text())
    out = nm.rejected_values(body, ["http://bad example.com/", "2001:db8::1", "http://ok.example/"])
    assert out == {
        "http://bad example.com/": "rejected by Netskope: Invalid URL: contains whitespace",
        "2001:db8::1": "rejected by Netskope: IPv6 addresses are not supported",
    }


def test_rejected_values_tolerates_other_shapes():
    """A string message, dict items or bare values do not break the parser."""
    assert nm.rejected_values({"message": "bad request"}, ["a"]) == {}
    assert nm.rejected_values({"message": [{"value": "a", "reason": "no"}, ["b"]]}, ["a", "b"]) == {
        "a": "rejected by Netskope: no",
        "b": "rejected by Netskope as invalid",
    }
    assert nm.rejected_values(None, ["a"]) == {}


def test_find_list_by_name():
    """The URL list is found by name in the listing (plain or wrapped array)."""
    lists = [{"id": 7, "name": "other"}, {"id": 9, "name": "ctd", "data": {"urls": ["a", 5], "type": "exact"}}]
    entry = nm.find_list(lists, "ctd")
    assert entry is not None and entry["id"] == 9 and nm.list_urls(entry) == ["a"]
    assert nm.find_list({"data": lists}, "other")["id"] == 7
    assert nm.find_list(lists, "missing") is None and nm.find_list("junk", "ctd") is None


def test_remaining_urls_keeps_order_and_never_empties():
    """Retraction keeps the other entries in order; an emptied list holds the placeholder."""
    assert nm.remaining_urls(["a", "b", "c"], {"b"}, "ph") == ["a", "c"]
    assert nm.remaining_urls(["a"], {"a"}, "ph") == ["ph"]


def test_hash_list_body_and_filler():
    """Hashes are comma-separated; an empty list becomes the 64-f filler."""
    assert nm.hash_list_body(["a", "b"]) == "a,b"
    assert nm.hash_list_body([]) == "f" * 64


def test_hash_list_outcomes():
    """Success and the "no change" error both succeed; other errors fail with their text."""
    assert nm.hash_list_outcome({"status": "success"}) == (True, "updated")
    dup = {"status": "error", "errors": ["Duplicate request, no change in file hashes"]}
    assert nm.hash_list_outcome(dup) == (True, "no change")
    assert nm.hash_list_outcome({"status": "error", "errors": ["File list x not found"]}) == (
        False,
        "File list x not found",
    )
    assert nm.hash_list_outcome([]) == (False, "unexpected reply")


def test_v1_auth_error_detected_in_body():
    """A v1 reply that says the token is wrong is recognized even with HTTP 200."""
    assert nm.is_auth_error({"status": "error", "errorCode": "Authorization Error", "errors": ["x"]})
    assert nm.is_auth_error({"status": "error", "errors": ["Invalid token"]})
    assert not nm.is_auth_error({"status": "error", "errors": ["File list x not found"]})
