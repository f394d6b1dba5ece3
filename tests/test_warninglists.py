"""MISP warning lists (ctd.warninglists): MISP's matching semantics, ctd's extensions, the default set."""

from __future__ import annotations

import importlib.util

import pytest

from ctd import warninglists as wl
from ctd.adapters.web.extract import extract
from ctd.errors import ConfigError
from ctd.warninglists import DEFAULT_LISTS, WarningLists, _ListFile, available
from ctd.warninglists_structs import Compact
from tests.webcorpus import feed_entry_texts, items, text_of

ITEMS = items()


def lists(*specs: tuple[str, str, list[str], list[str]]) -> WarningLists:
    """Synthetic lists: (name, MISP type, entries, matching_attributes), in priority order."""
    return WarningLists(
        [
            (name, _ListFile(name=name, type=kind, entries=entries, matching_attributes=attrs))
            for name, kind, entries, attrs in specs
        ]
    )


@pytest.fixture(scope="module")
def default() -> WarningLists:
    return WarningLists.load("default")


class TestCorpus:
    @pytest.mark.parametrize("item", ITEMS, ids=[i.name for i in ITEMS])
    def test_flags_exactly_the_expected(self, item, default):
        """Among everything extracted from a corpus item, the default lists flag exactly expected_warninglisted.txt."""
        texts = feed_entry_texts(item.path.read_bytes()) if item.kind == "feed" else [text_of(item)]
        found = {pair for text in texts for pair in extract(text, exclude_domains=item.exclude)}
        assert {pair for pair in found if default.match(*pair)} == item.expected("expected_warninglisted.txt")

    def test_named_hits(self, default):
        """Typical benign values from articles hit the list one would expect."""
        cases = {
            ("ipv4", "10.13.37.5"): "rfc1918",
            ("ipv4", "100.64.1.1"): "rfc6598",
            ("ipv4", "192.0.2.45"): "rfc5735",
            ("ipv6", "2001:db8::1"): "rfc3849",
            ("ipv4", "8.8.8.8"): "public-dns-v4",
            ("ipv4", "104.16.0.1"): "cloudflare",
            ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"): "empty-hashes",
            ("md5", "44d88612fea8a8f36de82e1278abb02f"): "eicar.com",
            ("domain", "example.com"): "rfc6761",
            ("domain", "duckdns.org"): "second-level-tlds",
            ("url", "https://learn.microsoft.com/en-us/x"): "tranco10k",
            ("email", "abuse@example.net"): "common-contact-emails",
            ("url", "http://192.168.1.1/login"): "rfc1918",
        }
        assert {case: default.match(*case) for case in cases} == cases

    def test_attacker_values_not_flagged(self, default):
        """Values typical of attacker infrastructure stay unflagged."""
        for case in [
            ("ipv4", "45.155.205.99"),
            ("domain", "evil.duckdns.org"),
            ("url", "https://secure-docs-view.pages.dev/review"),
            ("email", "operator@redfox-ops.xyz"),
            ("sha256", "716a071dc9b51a38451578ccf72a7553d158b0f2a49018dc26b276831498e6e2"),
        ]:
            assert default.match(*case) is None, case

    def test_default_lists_are_shipped(self):
        """Every default list exists in the installed pymispwarninglists."""
        assert set(DEFAULT_LISTS) <= set(available())


class TestSemantics:
    def test_cidr_address_and_network(self):
        """An address inside a listed network hits; a network hits only if all of it is listed."""
        w = lists(("a", "cidr", ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], ["ip-src"]))
        assert w.match("ipv4", "10.255.255.255") == "a"
        assert w.match("ipv4", "11.0.0.0") is None
        assert w.match("ipv4", "192.0.2.7") == "a"
        assert w.match("ipv4", "192.0.2.8") is None
        assert w.match("ipv6", "2001:db8:ffff::1") == "a"
        assert w.match("cidr4", "10.1.0.0/16") == "a"
        assert w.match("cidr4", "10.0.0.0/7") is None
        assert w.match("cidr6", "2001:db8::/31") is None

    def test_cidr_overlap_reports_first_list(self):
        """Where networks of several lists overlap, the list loaded first is reported."""
        w = lists(("small", "cidr", ["10.1.0.0/16"], ["ip-dst"]), ("big", "cidr", ["10.0.0.0/8"], ["ip-dst"]))
        assert [w.match("ipv4", ip) for ip in ("10.0.0.1", "10.1.2.3", "10.2.0.1")] == ["big", "small", "big"]
        assert w.match("cidr4", "10.0.0.0/8") == "big"  # covered, partly by "small"

    def test_hostname_parents_and_public_suffixes(self):
        """A hostname entry covers its subdomains, except an entry that is a public suffix."""
        w = lists(("top", "hostname", ["example.org", ".github.io", "pages.dev"], ["hostname", "domain", "url"]))
        assert w.match("domain", "example.org") == "top"
        assert w.match("domain", "a.b.example.org") == "top"
        assert w.match("domain", "badexample.org") is None
        assert w.match("domain", "github.io") == "top"
        assert w.match("domain", "evil.github.io") is None
        assert w.match("url", "https://evil.pages.dev/x") is None
        assert w.match("url", "https://www.example.org/path") == "top"

    def test_string_exact(self):
        """A string entry matches only the same value (hashes and names case-insensitively)."""
        w = lists(("s", "string", ["D41D8CD98F00B204E9800998ECF8427E", "Example.COM"], ["md5", "domain"]))
        assert w.match("md5", "d41d8cd98f00b204e9800998ecf8427e") == "s"
        assert w.match("domain", "example.com") == "s"
        assert w.match("domain", "www.example.com") is None

    def test_substring(self):
        """A substring entry matches anywhere in the value."""
        w = lists(("sub", "substring", ["virustotal.com", "any.run"], ["url", "domain"]))
        assert w.match("url", "https://www.virustotal.com/gui/file/x") == "sub"
        assert w.match("domain", "app.any.run") == "sub"
        assert w.match("domain", "virustotal.co") is None

    def test_regex(self):
        """A /pattern/flags entry is a case-insensitive-if-asked Python regex; an invalid one is skipped."""
        w = lists(("rx", "regex", ["/^(security|abuse)\\@.*$/i", "/(unclosed/"], ["email-src"]))
        assert w.match("email", "Abuse@example.net") == "rx"
        assert w.match("email", "alice@example.net") is None
        assert w.skipped == ("rx: /(unclosed/",)

    def test_matching_attributes(self):
        """A list applies only to the types its matching_attributes name; none named means all types."""
        w = lists(("hashes", "string", ["abc.com"], ["md5"]), ("any", "string", ["1.2.3.4"], []))
        assert w.match("domain", "abc.com") is None
        assert w.match("ipv4", "1.2.3.4") == "any"

    def test_url_ip_host_checked_against_cidr_lists(self):
        """A url whose host is an IP literal hits the cidr lists that apply to addresses (ctd extension)."""
        w = lists(("p", "cidr", ["192.168.0.0/16", "fd00::/8"], ["ip-dst"]))
        assert w.match("url", "http://192.168.1.1:8080/admin") == "p"
        assert w.match("url", "http://[fd00::1]/") == "p"
        assert w.match("url", "http://192.169.1.1/") is None

    def test_compact_set(self):
        """The compact representation of big lists answers membership like a set."""
        keys = Compact(f"host{i}.example" for i in range(1000))
        assert "host7.example" in keys
        assert "host1000.example" not in keys


class TestLoading:
    def test_unknown_name(self):
        """An unknown list name is a configuration error."""
        with pytest.raises(ConfigError, match="unknown warning list 'no-such-list'"):
            WarningLists.load(["no-such-list"])

    def test_path_in_name(self):
        """A list name cannot reach outside the lists directory."""
        with pytest.raises(ConfigError, match="unknown warning list"):
            WarningLists.load(["../lists/rfc1918"])

    def test_bad_spec(self):
        """A string other than "default"/"all" is a configuration error."""
        with pytest.raises(ConfigError, match="warninglists must be"):
            WarningLists.load("some")

    def test_order_is_priority(self):
        """The order of the names is the order of report."""
        assert WarningLists.load(["rfc5735", "rfc1918"]).match("ipv4", "10.0.0.1") == "rfc5735"
        assert WarningLists.load(["rfc1918", "rfc5735"]).match("ipv4", "10.0.0.1") == "rfc1918"

    def test_shared(self):
        """Loading the same names twice gives the same object (plugins share one copy)."""
        assert WarningLists.load(["rfc1918"]) is WarningLists.load(["rfc1918"])

    def test_info(self):
        """info() describes each loaded list for ctdctl."""
        (info,) = WarningLists.load(["rfc1918"]).info()
        assert (info.name, info.kind, info.entries) == ("rfc1918", "cidr", 3)
        assert info.types == ("ipv4", "ipv6", "cidr4", "cidr6")

    def test_missing_extra(self, monkeypatch):
        """Without pymispwarninglists installed, asking for lists says how to install them."""
        real = importlib.util.find_spec
        monkeypatch.setattr(
            wl.importlib.util, "find_spec", lambda name, *a: None if name == "pymispwarninglists" else real(name, *a)
        )
        with pytest.raises(ConfigError, match=r"pip install 'ctd\[warninglists\]'"):
            wl.lists_dir()


def test_short_ipv4_forms_are_not_addresses():
    """inet_aton's short forms ('10.1', '10.1.2') are neither an address nor a listed network."""
    from ctd.warninglists_structs import ip_int, network

    assert ip_int("10.1") is None and ip_int("10.1.2") is None
    assert network("10.1") is None and network("10.1/16") is None
    assert ip_int("10.0.0.1") == (32, 0x0A000001)
