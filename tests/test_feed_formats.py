"""Pure parsing of the ``feed`` adapter: text, csv, json, presets, MISP events, gzip, lines."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest
from pymisp import MISPAttribute, MISPEvent, MISPOrganisation

from ctd.adapters.feed import formats as ff
from ctd.adapters.feed.adapter import FeedAdapter, resolve
from ctd.config import convert_section
from ctd.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "feed"
NOW = 1_796_000_000
NOV_27_1940 = 1_795_808_400  # 2026-11-27T19:40:00Z
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def spec(**keys: object) -> ff.Spec:
    return resolve(convert_section({"url": "https://feed.example/x", **keys}, FeedAdapter.Config, "$"))


def parse_lines(data: bytes, **keys: object) -> ff.Parsed:
    s = spec(**keys)
    stream = ff.line_stream(s, NOW)
    splitter = ff.LineSplitter()
    return stream.feed(splitter.feed(data) + splitter.finish(), 0, True)


def parse_fixture(name: str, **keys: object) -> ff.Parsed:
    return parse_lines((FIXTURES / name).read_bytes(), **keys)


def pairs(parsed: ff.Parsed) -> list[tuple[str, str]]:
    return [(s.type, s.value) for s in parsed[0]]


# --------------------------------------------------------------------------- text


def test_text_skips_comments_and_refangs_values():
    """Text: comment and blank lines skipped, inline comments cut, values auto-typed and refanged."""
    out, rejected = parse_fixture("plain.txt")
    assert pairs((out, rejected)) == [
        ("ipv4", "198.51.100.1"),
        ("domain", "evil.example.org"),
        ("url", "http://bad.example.com/x"),
        ("md5", MD5),
    ]
    assert [r.where for r in rejected] == ["line 7"]
    assert all(s.first_seen == s.last_seen == NOW for s in out)


def test_text_ip_type_strips_ports_and_rejects_non_ips():
    """``type = "ip"`` takes IPv4/IPv6 with or without a port and rejects anything else."""
    out, rejected = parse_lines(b"198.51.100.1:8080\n[2001:db8::1]:443\nevil.example\n", type="ip")
    assert pairs((out, rejected)) == [("ipv4", "198.51.100.1"), ("ipv6", "2001:db8::1")]
    assert [r.where for r in rejected] == ["line 3"]


# --------------------------------------------------------------------------- csv


def test_csv_by_header_name_with_dialect_and_columns():
    """CSV: delimiter, quotechar, comment prefix, header names, type/severity/tags/time columns."""
    out, rejected = parse_fixture(
        "generic.csv",
        format="csv",
        delimiter=";",
        quotechar="'",
        comment_prefix=";",
        tag_separator="|",
        value_column="indicator",
        type_column="kind",
        first_seen_column="seen",
        severity_column="level",
        tags_column="labels",
    )
    assert pairs((out, rejected)) == [
        ("domain", "bad.example.net"),
        ("ipv4", "198.51.100.9"),
        ("url", "http://x.example/a;b"),
        ("ipv4", "203.0.113.1"),  # its unreadable first_seen costs the field, not the row
        ("ipv4", "203.0.113.2"),
    ]
    assert out[0].severity == "high" and out[0].tags == ("a", "b") and out[0].first_seen == 1_793_491_200
    assert out[3].first_seen == NOW  # the dropped field: as if the feed gave none
    assert {r.where: (r.kind, r.reason) for r in rejected} == {
        "line 6": ("field", "bad first_seen 'yesterday' (dropped)"),
        "line 8": ("unsupported_type", "unsupported type 'hash'"),
    }


def test_csv_by_column_number_without_header():
    """``header = false``: columns are 0-based numbers."""
    out, _ = parse_fixture("noheader.csv", format="csv", header=False, value_column=0, type_column=1, tags_column=2)
    assert pairs((out, [])) == [("ipv4", "192.0.2.10"), ("domain", "bad.example.com")]
    assert out[1].tags == ("phishing",)


def test_csv_short_rows_and_bad_bytes_are_rejected_and_the_rest_ingests():
    """A row without the value column, or not UTF-8, is rejected with its line; others ingest."""
    data = b"value,tags\n192.0.2.1,a\n\n\xff\xfe,b\n192.0.2.2\n,x\n"
    out, rejected = parse_lines(data, format="csv", tags_column="tags")
    assert pairs((out, rejected)) == [("ipv4", "192.0.2.1"), ("ipv4", "192.0.2.2")]
    assert [(r.where, r.reason) for r in rejected] == [("line 4", "not valid UTF-8"), ("line 6", "empty value")]


def test_csv_missing_header_column_is_a_format_error():
    """A header without the named value column fails the whole document."""
    with pytest.raises(ff.FormatError, match="no header with the columns"):
        parse_lines(b"a,b\n1,2\n", format="csv", value_column="url")


def test_csv_header_in_last_comment_line():
    """The header may be the last comment line before data (``# id,dateadded,url,...``)."""
    out, rejected = parse_lines(b"# banner\n# value,tags\n192.0.2.1,a\n", format="csv", tags_column="tags")
    assert pairs((out, rejected)) == [("ipv4", "192.0.2.1")] and rejected == []


# --------------------------------------------------------------------------- presets


def test_urlhaus_preset():
    """URLhaus: url, dateadded -> first_seen, threat and tags -> tags, urlhaus_link -> reference."""
    out, rejected = parse_fixture("urlhaus.csv", preset="urlhaus")
    assert pairs((out, rejected)) == [
        ("url", "http://198.51.100.23:40211/Mozi.m"),
        ("url", "https://evil.example.com/payload.exe"),
    ]
    first = out[0]
    assert first.tags == ("malware_download", "32-bit", "elf", "mips", "Mozi")
    assert first.reference == "https://urlhaus.abuse.ch/url/3300003/"
    assert first.first_seen == NOV_27_1940 + 11 and first.last_seen == NOW
    assert [(r.where, r.reason) for r in rejected] == [("line 12", "empty value")]


def test_threatfox_preset_maps_types_confidence_and_tags():
    """ThreatFox: ioc_type mapped (ip:port -> the IP), confidence -> reputation, 'None' is empty."""
    out, rejected = parse_fixture("threatfox.csv", preset="threatfox")
    assert pairs((out, rejected)) == [
        ("ipv4", "198.51.100.44"),
        ("domain", "c2.evil.example.net"),
        ("sha256", SHA256),
    ]
    ip, dom, h = out
    assert ip.reputation == 8 and dom.reputation == 10 and h.reputation == 5
    assert ip.tags == ("botnet_cc", "Cobalt Strike", "CobaltStrike", "c2")
    assert dom.tags == ("botnet_cc", "Agent Tesla")
    assert ip.first_seen == NOV_27_1940 and ip.last_seen == NOV_27_1940 + 240
    assert ip.reference == "" and dom.reference == "https://example.org/report/1"
    assert [(r.where, r.reason) for r in rejected] == [("line 13", "unsupported type 'registry_key'")]


def test_threatfox_preset_parses_by_header_name_without_is_compromised():
    """The older ThreatFox export (no is_compromised column) parses the same way."""
    out, rejected = parse_fixture("threatfox_old.csv", preset="threatfox")
    assert pairs((out, rejected)) == [("url", "http://rocheholding.example/five/fre.php"), ("ipv4", "203.0.113.90")]
    assert out[0].reference == "https://bazaar.abuse.ch/sample/d5a6/" and out[1].reputation == 10
    assert rejected == []


def test_malwarebazaar_preset_emits_each_hash():
    """MalwareBazaar: sha256, md5 and sha1 become three IoCs; 'n/a' is empty; signature is a tag."""
    out, rejected = parse_fixture("malwarebazaar.csv", preset="malwarebazaar")
    assert pairs((out, rejected)) == [
        ("sha256", SHA256),
        ("md5", MD5),
        ("sha1", SHA1),
        ("sha256", "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"),
        ("sha1", "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"),
    ]
    assert out[0].tags == ("AgentTesla",) and out[3].tags == ()
    assert rejected == []


def test_feodo_preset_keeps_offline_c2s_tagged():
    """Feodo: dst_ip as ipv4, malware and c2_status as tags (offline ones still reported)."""
    out, rejected = parse_fixture("feodo.csv", preset="feodo")
    assert pairs((out, rejected)) == [("ipv4", "198.51.100.5"), ("ipv4", "203.0.113.46")]
    assert out[0].tags == ("Dridex", "offline") and out[0].last_seen == 1_795_132_800
    assert [r.where for r in rejected] == ["line 12"]


def test_preset_fills_only_unset_keys():
    """Keys the operator sets win over the preset's."""
    s = spec(preset="urlhaus", tags_column="threat", reference_column=None)
    assert s.fields["tags"] == ("threat",) and s.fields["reference"] == ("urlhaus_link",)
    assert s.format == "csv" and s.skip_initial_space


@pytest.mark.parametrize(
    "keys",
    [
        {"format": "csv", "delimiter": ";;"},
        {"format": "csv", "header": False, "value_column": "url"},
        {"format": "csv", "value_column": -1},
        {"type_map": {"x": "registry"}},
        {"format": "json", "value_field": []},
        {"preset": "nope"},
        {"bogus": 1},
    ],
)
def test_bad_parsing_keys_are_config_errors(keys):
    """Invalid parsing keys are rejected at config load."""
    with pytest.raises(ConfigError):
        spec(**keys)


# --------------------------------------------------------------------------- json


def json_parse(**keys: object) -> ff.Parsed:
    s = spec(format="json", **keys)
    items = ff.json_items((FIXTURES / "items.json").read_bytes(), s)
    out, rejected, _ = ff.json_records(items, 0, s, NOW)
    return out, rejected


def test_json_path_and_fields():
    """JSON: the list at json_path; dotted field paths; list or separated-string tags; bare strings."""
    out, rejected = json_parse(
        json_path="data.items",
        value_field="ioc",
        type_field="kind",
        tags_field="meta.labels",
        first_seen_field="meta.first",
        reputation_field="score",
        reputation_scale=100,
    )
    assert pairs((out, rejected)) == [
        ("ipv4", "198.51.100.70"),
        ("domain", "evil.example.org"),
        ("domain", "bad2.example.org"),
    ]
    assert out[0].tags == ("c2", "x") and out[0].reputation == 8 and out[0].first_seen == 1_793_491_200
    assert out[1].tags == ("a", "b")
    # item 3 has no value field at all: not a record (a metadata object), skipped, not rejected
    assert [r.where for r in rejected] == ["item 4", "item 5"]


def test_json_broken_document_and_bad_path_are_format_errors():
    """Undecodable JSON, or a json_path that is not there, fails the document."""
    with pytest.raises(ff.FormatError, match="bad JSON"):
        ff.json_items(b'{"data": [1, 2', spec(format="json"))
    with pytest.raises(ff.FormatError, match="no key 'data.nope'"):
        ff.json_items(b'{"data": {}}', spec(format="json", json_path="data.nope"))


# --------------------------------------------------------------------------- MISP


def misp_event(uuid: str = "5f0c1c2e-0000-4000-8000-000000000001") -> MISPEvent:
    """A MISP event built with PyMISP, as a MISP feed would export it."""
    e = MISPEvent()
    e.uuid, e.info, e.threat_level_id, e.date = uuid, "Emotet wave", 2, dt.date(2026, 11, 27)
    org = MISPOrganisation()
    org.name, org.uuid = "ACME CERT", "5f0c1c2e-0000-4000-8000-0000000000aa"
    e.Orgc = org
    e.add_tag("tlp:white")
    a = e.add_attribute("ip-dst", "198.51.100.7", to_ids=True, comment="C2")
    assert isinstance(a, MISPAttribute)
    a.add_tag("c2")
    e.add_attribute("ip-dst|port", "198.51.100.8|443", to_ids=True)
    e.add_attribute("domain|ip", "evil.example.net|203.0.113.9", to_ids=True)
    e.add_attribute("filename|sha256", f"invoice.exe|{SHA256}", to_ids=True)
    e.add_attribute("email-src", "Phisher@Evil.Example.net", to_ids=True)
    e.add_attribute("hostname", "bad.example.net", to_ids=False)  # not for IDS: ignored
    e.add_attribute("text", "free text", to_ids=True)  # no ctd type: ignored
    e.add_attribute("ip-src", "not-an-ip", to_ids=True)
    gone = e.add_attribute("url", "http://gone.example.net/x", to_ids=True)
    assert isinstance(gone, MISPAttribute)
    gone.delete()
    o = e.add_object(name="file")
    o.add_attribute("md5", value=MD5, to_ids=True)
    for attr in e.attributes + o.attributes:
        attr.timestamp = NOV_27_1940
    e.timestamp = e.publish_timestamp = NOV_27_1940
    return e


def feed_files(*events: MISPEvent) -> dict[str, bytes]:
    """``manifest.json`` and ``<uuid>.json`` files, as PyMISP's feed export writes them."""
    import json

    manifest: dict[str, object] = {}
    files: dict[str, bytes] = {}
    for e in events:
        feed = e.to_feed(with_meta=True)
        manifest.update(feed["Event"].pop("_manifest"))
        feed["Event"].pop("_hashes")
        files[f"{e.uuid}.json"] = json.dumps(feed).encode()
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def test_misp_event_maps_ids_attributes():
    """MISP: to_ids attributes of mapped types, composites split, objects included, tags merged."""
    files = feed_files(misp_event())
    (out, rejected), retracted = ff.misp_event(files["5f0c1c2e-0000-4000-8000-000000000001.json"], NOW, "ref")
    assert pairs((out, rejected)) == [
        ("ipv4", "198.51.100.7"),
        ("ipv4", "198.51.100.8"),
        ("domain", "evil.example.net"),
        ("ipv4", "203.0.113.9"),
        ("sha256", SHA256),
        ("email", "Phisher@evil.example.net"),
        ("md5", MD5),
    ]
    first = out[0]
    assert first.tags == ("tlp:white", "c2") and first.comments == "C2" and first.severity == "medium"
    assert out[1].comments == "Emotet wave" and first.first_seen == NOV_27_1940 and first.reference == "ref"
    assert [r.reason.endswith("'not-an-ip'") for r in rejected] == [True]
    assert [(s.value, s.retracted) for s in retracted] == [("http://gone.example.net/x", True)]


MALWARE_MD5 = "2f7025a4e2fd9a26dcc64afc7b9d2b67"


def raw_event(*attributes: dict) -> bytes:
    """A MISP feed event file holding these attributes (as MISP writes them: all to_ids)."""
    import json

    attrs = [{"to_ids": True, "timestamp": str(NOV_27_1940), **a} for a in attributes]
    return json.dumps({"Event": {"uuid": "e1", "info": "sample", "threat_level_id": "2", "Attribute": attrs}}).encode()


def test_misp_feed_malware_sample_is_its_md5():
    """A malware-sample attribute (``name|md5``) gives its md5, as the REST misp adapter reads it (issue 12 #2)."""
    (out, rejected), _ = ff.misp_event(raw_event({"type": "malware-sample", "value": f"a5ff5f.exe|{MALWARE_MD5}"}), NOW)
    assert pairs((out, rejected)) == [("md5", MALWARE_MD5)]


# One value per MISP type the adapters read (a composite's parts, a port, a defanged form).
MISP_SAMPLES = {
    "ip-src": "198.51.100.1",
    "ip-dst": "2001:db8::1",
    "ip-src|port": "198.51.100.2|8080",
    "ip-dst|port": "198.51.100.3|443",
    "domain": "evil.example",
    "domain|ip": "evil.example|203.0.113.5",
    "hostname": "c2.evil.example",
    "hostname|port": "c2.evil.example|8443",
    "url": "http://evil.example/x",
    "md5": "a" * 32,
    "sha1": "b" * 40,
    "sha256": "c" * 64,
    "filename|md5": f"x.doc|{'d' * 32}",
    "filename|sha1": f"x|y.doc|{'e' * 40}",
    "filename|sha256": f"x.doc|{'f' * 64}",
    "malware-sample": f"a5ff5f.exe|{MALWARE_MD5}",
    "email": "a@evil.example",
    "email-src": "b@evil.example",
    "email-dst": "c@evil.example",
}


@pytest.mark.parametrize("mtype", sorted(MISP_SAMPLES))
def test_misp_feed_and_rest_read_every_type_alike(mtype):
    """The MISP feed format and the REST misp adapter share one type table: the same attribute, the same IoCs."""
    from ctd.adapters.misp import mapping as misp_map

    value = MISP_SAMPLES[mtype]
    (feed, rejected), _ = ff.misp_event(raw_event({"type": mtype, "value": value}), NOW)
    rest, _ = misp_map.map_attribute(
        {"type": mtype, "value": value, "to_ids": True}, base_url="", export_tag="ctd", to_ids_only=True
    )
    assert rejected == [] and feed
    assert [(x.type, x.value) for x in feed] == [(x.type, x.value) for x in rest]


def test_misp_manifest_and_broken_event():
    """The manifest maps uuid -> timestamp; a file that is not an event is a format error."""
    files = feed_files(misp_event())
    assert ff.parse_manifest(files["manifest.json"]) == {"5f0c1c2e-0000-4000-8000-000000000001": NOV_27_1940}
    with pytest.raises(ff.FormatError):
        ff.misp_event(b'{"Event": ', NOW)
    with pytest.raises(ff.FormatError):
        ff.parse_manifest(b"[]")


# --------------------------------------------------------------------------- bytes and lines


def test_inflate_decodes_multi_member_gzip_and_detects_truncation():
    """Concatenated gzip members are one stream; a cut-off stream raises at finish."""
    data = gzip.compress(b"a\n") + gzip.compress(b"b\n")
    inf = ff.Inflate()
    assert b"".join(inf.feed(data)) == b"a\nb\n"
    inf.finish()
    cut = ff.Inflate()
    b"".join(cut.feed(gzip.compress(b"x" * 1000)[:-10]))
    with pytest.raises(ff.FormatError, match="truncated"):
        cut.finish()


def test_line_splitter_numbers_lines_across_chunks():
    """Lines split across chunks are joined; CRLF and a BOM are removed; the last line needs finish."""
    s = ff.LineSplitter()
    got = s.feed(b"\xef\xbb\xbfa\r\nb") + s.feed(b"c\nd")
    assert got == [(1, b"a"), (2, b"bc")]
    assert s.finish() == [(3, b"d")]
