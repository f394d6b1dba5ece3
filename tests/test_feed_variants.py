"""Formats real feeds need (issue 12 findings 5 and 6): several columns to one value, separators inside a
field, preambles, JSON Lines, list items, every variant of the abuse.ch exports, field warnings."""

from __future__ import annotations

import pytest

from ctd.adapters.feed import formats as ff
from ctd.errors import ConfigError
from ctd.times import parse_time
from tests.test_feed_formats import NOW, pairs, parse_lines, spec


def kinds(parsed: ff.Parsed) -> list[tuple[str, str, str]]:
    return [(r.where, r.kind, r.reason) for r in parsed[1]]


# --------------------------------------------------------------------------- several columns, one value


def test_value_template_builds_a_network_from_two_columns():
    """DShield: Start and the prefix length Netblock are one network, 43.229.53.0/24, not an address."""
    data = b"Start\tEnd\tNetblock\tAttacks\n43.229.53.0\t43.229.53.255\t24\t788\n194.63.140.0\t194.63.140.255\t24\t5\n"
    parsed = parse_lines(data, format="csv", delimiter="\t", value_template="{Start}/{Netblock}", type="ip")
    assert pairs(parsed) == [("cidr4", "43.229.53.0/24"), ("cidr4", "194.63.140.0/24")] and parsed[1] == []


def test_value_template_by_column_number_and_missing_part():
    """Without a header {0}/{2} are column numbers; a row missing a part has no value (rejected as empty)."""
    parsed = parse_lines(b"10.1.0.0,x,16\n10.2.0.0,x,\n", format="csv", header=False, value_template="{0}/{2}")
    assert pairs(parsed) == [("cidr4", "10.1.0.0/16")]
    assert kinds(parsed) == [("line 2", "malformed", "empty value")]


def test_value_template_in_json_fields():
    """JSON items build their value from dotted fields too."""
    parsed = parse_lines(
        b'{"net": {"start": "192.0.2.0", "bits": 28}}\n', format="jsonl", value_template="{net.start}/{net.bits}"
    )
    assert pairs(parsed) == [("cidr4", "192.0.2.0/28")]


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"format": "csv", "value_template": "{Start}/{Netblock}", "value_column": "Start"}, "not both"),
        ({"format": "csv", "value_template": "/24"}, "names no column"),
        ({"format": "csv", "value_template": "{a:>3}"}, "no ':'"),
        ({"format": "text", "value_template": "{0}"}, "needs format csv"),
        ({"format": "csv", "column_count": 5}, "go together"),
        ({"format": "csv", "column_count": 3, "overflow_column": 3}, "overflow_column < column_count"),
        ({"format": "csv", "first_seen_format": "dd-mm-yyyy"}, "strptime"),
    ],
)
def test_bad_format_keys_are_config_errors(keys, error):
    """Templates, column counts and time formats that cannot work are refused at config load."""
    with pytest.raises(ConfigError, match=error):
        spec(**keys)


# --------------------------------------------------------------------------- a separator inside a field


DATAPLANE = (
    b"# ASN  |  ASname  |  saddr  |  utc  |  category\n"
    b"4837   |  CHINA169-BACKBONE  |  117.21.224.121  |  2016-12-05 22:10:02  |  sshpwauth\n"
    b"64496  |  TEST-AS company | With | pipe   |  198.51.100.4  |  2016-12-06 12:00:00  |  sshpwauth\n"
)


def test_overflow_column_takes_the_extra_separators():
    """DataPlane: with column_count = 5, a '|' inside the ASname stays in it and the address is read."""
    parsed = parse_lines(
        DATAPLANE,
        format="csv",
        delimiter="|",
        header=False,
        value_column=2,
        last_seen_column=3,
        tags_column=4,
        type="ip",
        column_count=5,
        overflow_column=1,
    )
    assert pairs(parsed) == [("ipv4", "117.21.224.121"), ("ipv4", "198.51.100.4")] and parsed[1] == []
    assert parsed[0][1].last_seen == parse_time("2016-12-06 12:00:00")


def test_without_a_column_count_the_shifted_row_is_lost():
    """What the keys fix: without them the shifted row's value column is a name, not an address."""
    parsed = parse_lines(DATAPLANE, format="csv", delimiter="|", header=False, value_column=2, type="ip")
    assert pairs(parsed) == [("ipv4", "117.21.224.121")]


# --------------------------------------------------------------------------- not records


def test_text_preamble_and_markup_are_skipped_not_invalid():
    """VX Vault: <pre>, a title and a date before the URLs, </pre> after them: skipped, none counted invalid."""
    data = (
        b"<pre>\r\nVX Vault last 100 Links\r\nMon, 17 Aug 2015 14:36:19 +0000\r\n\r\n"
        b"http://example.com/bad/program.exe\r\nhttp://198.51.100.42/d/svchost.exe\r\n</pre>\r\n"
    )
    parsed = parse_lines(data, type="url")
    assert pairs(parsed) == [
        ("url", "http://example.com/bad/program.exe"),
        ("url", "http://198.51.100.42/d/svchost.exe"),
    ]
    assert parsed[1] == []


def test_a_bad_value_after_the_first_one_is_invalid_again():
    """Only lines before the first value can be a preamble: a bad line later is a malformed record."""
    parsed = parse_lines(b"Site\nexample.com\nnot a domain\n", type="domain")
    assert pairs(parsed) == [("domain", "example.com")]
    assert [w for w, _, _ in kinds(parsed)] == ["line 3"]


def test_a_long_preamble_is_data_after_all():
    """More than MAX_PREAMBLE bad lines before any value are rejected, not skipped."""
    data = b"".join(b"junk %d\n" % i for i in range(ff.MAX_PREAMBLE + 1)) + b"198.51.100.1\n"
    parsed = parse_lines(data)
    assert pairs(parsed) == [("ipv4", "198.51.100.1")] and len(parsed[1]) == ff.MAX_PREAMBLE + 1


def test_lines_without_any_value_are_rejected_at_the_end():
    """A body with no value at all: its lines are reported (the adapter then fails the pull)."""
    parsed = parse_lines(b"Service Unavailable\nTry again later\n")
    assert pairs(parsed) == [] and len(parsed[1]) == 2


def test_csv_lines_before_the_header_are_a_preamble():
    """A title and a date above the CSV header are skipped; the header is then found by its names."""
    data = b"Example threat list\n2026-01-02\nvalue,tags\n192.0.2.1,a\n"
    parsed = parse_lines(data, format="csv", tags_column="tags")
    assert pairs(parsed) == [("ipv4", "192.0.2.1")] and parsed[1] == []


def test_jsonl_lines_and_a_metadata_object():
    """JSON Lines: one object a line; an object without the value field (metadata) is not a record."""
    data = (
        b'{"cidr":"1.4.0.0/17","sblid":"SBL256893"}\n{"cidr":"2001:db8::/32"}\n\n'
        b'{"cidr":"1.10.16.0/20"\n'  # broken JSON: malformed
        b'{"type":"metadata","timestamp":1787248000,"records":3}\n'
    )
    parsed = parse_lines(data, format="ndjson", value_field="cidr", type="ip")
    assert pairs(parsed) == [("cidr4", "1.4.0.0/17"), ("cidr6", "2001:db8::/32")]
    assert [(w, k) for w, k, _ in kinds(parsed)] == [("line 4", "malformed")]


def test_json_items_that_are_lists_hold_records():
    """ThreatFox's JSON export: an object keyed by IoC id, each a list of one IoC."""
    body = (
        b'{"1751208": [{"ioc_value": "8.134.12.90:7777", "ioc_type": "ip:port", "confidence_level": 100}],'
        b' "1751205": [{"ioc_value": "nemesis-c2.example.net", "ioc_type": "domain"}, 7]}'
    )
    s = spec(format="json", preset="threatfox")
    out, rejected, skipped = ff.json_records(ff.json_items(body, s), 0, s, NOW)
    assert pairs((out, rejected)) == [("ipv4", "8.134.12.90"), ("domain", "nemesis-c2.example.net")]
    assert out[0].reputation == 10 and [r.where for r in rejected] == ["item 1[1]"] and skipped == 0


# --------------------------------------------------------------------------- every variant of a preset


URLHAUS_COUNTRY = (
    b"# Feed generated for Country CH\n#\n"
    b"# Dateadded (UTC),URL,URL_status,Threat,Host,IPaddress,ASnumber,Country\n"
    b'"2019-02-13 00:34:42","http://marconuenlist.ch/verif/","offline","malware_download","marconuenlist.ch",'
    b'"62.241.37.242","29083","CH"\n'
)


def test_urlhaus_preset_reads_the_per_country_feed():
    """The per-country export lacks tags and urlhaus_link and names its date column differently."""
    parsed = parse_lines(URLHAUS_COUNTRY, preset="urlhaus")
    assert pairs(parsed) == [("url", "http://marconuenlist.ch/verif/")] and parsed[1] == []
    s = parsed[0][0]
    assert s.tags == ("malware_download",) and s.reference == ""
    assert s.first_seen == parse_time("2019-02-13 00:34:42")


def test_feodo_preset_reads_the_2019_export():
    """Feodo's export until 2019: # Firstseen,DstIP,DstPort,Malware."""
    data = b"# Firstseen,DstIP,DstPort,Malware\n2019-03-04 22:10:24,110.93.230.101,990,Heodo\n"
    parsed = parse_lines(data, preset="feodo")
    assert pairs(parsed) == [("ipv4", "110.93.230.101")] and parsed[1] == []
    assert parsed[0][0].tags == ("Heodo",)


def test_columns_the_operator_names_are_required():
    """An operator's own column missing from the header is still a format error (a typo must not pass)."""
    with pytest.raises(ff.FormatError, match="no header"):
        parse_lines(b"value,tags\n192.0.2.1,a\n", format="csv", tags_column="labels")


def test_a_preset_without_the_format_variant_is_refused():
    """A preset has a JSON variant only where the publisher has a JSON export."""
    with pytest.raises(ConfigError, match="no json variant"):
        spec(preset="urlhaus", format="json")


# --------------------------------------------------------------------------- one bad field keeps the IoC


def test_declared_time_format_reads_day_first_dates():
    """first_seen_format reads ViriBack's DD-MM-YYYY; without it the field is dropped with a warning."""
    data = b"Family,URL,FirstSeen\nPony,http://officeman.tk/images/admin.php,01-06-2019\n"
    keys = {"format": "csv", "value_column": "URL", "first_seen_column": "FirstSeen"}
    parsed = parse_lines(data, **keys, first_seen_format="%d-%m-%Y")
    assert parsed[0][0].first_seen == parse_time("2019-06-01") and parsed[1] == []
    parsed = parse_lines(data, **keys)
    assert pairs(parsed) == [("url", "http://officeman.tk/images/admin.php")]
    assert kinds(parsed) == [("line 2", "field", "bad first_seen '01-06-2019' (dropped)")]


def test_bad_reputation_and_severity_are_field_warnings():
    """A reputation or severity the feed cannot give is dropped; the IoC keeps the defaults."""
    data = b"value,score,level\n192.0.2.1,lots,urgent\n"
    parsed = parse_lines(data, format="csv", reputation_column="score", severity_column="level")
    assert pairs(parsed) == [("ipv4", "192.0.2.1")]
    assert parsed[0][0].reputation is None and parsed[0][0].severity == "unknown"
    assert [(k, r) for _, k, r in kinds(parsed)] == [
        ("field", "unknown severity 'urgent' (dropped)"),
        ("field", "bad reputation 'lots' (dropped)"),
    ]


def test_field_warnings_of_a_rejected_record_are_not_reported():
    """A record rejected for its value does not also report its other fields."""
    parsed = parse_lines(b"value,first_seen\nnot..valid,someday\n", format="csv", first_seen_column="first_seen")
    assert [k for _, k, _ in kinds(parsed)] == ["malformed"]


def test_a_quoted_newline_is_kept_and_refused():
    """A quoted CSV field holding a line break keeps it, so the value gate refuses it (never two values glued)."""
    parsed = parse_lines(b'value\n"http://evil.example/j\n10.0.0.0/8"\n192.0.2.1\n', format="csv", type="url")
    assert pairs(parsed) == [("url", "http://192.0.2.1")]
    assert [w for w, _, _ in kinds(parsed)] == ["line 2"]


def test_a_misp_attribute_with_an_unreadable_first_seen_is_kept():
    """MISP feed: an attribute's first_seen that is no time is dropped with a field warning; the IoC counts."""
    import json

    event = {
        "Event": {
            "uuid": "5f0c1c2e-0000-4000-8000-0000000000c1",
            "info": "x",
            "Attribute": [
                {
                    "type": "domain",
                    "value": "evil.example",
                    "to_ids": True,
                    "timestamp": "1700000000",
                    "first_seen": "soon",
                }
            ],
        }
    }
    (out, rejected), _ = ff.misp_event(json.dumps(event).encode(), NOW)
    assert pairs((out, [])) == [("domain", "evil.example")] and out[0].first_seen == 1_700_000_000
    assert [(r.kind, r.reason) for r in rejected] == [("field", "bad first_seen 'soon' (dropped)")]
