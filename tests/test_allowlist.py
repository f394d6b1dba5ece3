"""The allowlist: exact values, CIDRs and domains with their subdomains."""

from __future__ import annotations

import pytest

from ctd.allowlist import Allowlist

MD5 = "d41d8cd98f00b204e9800998ecf8427e"


@pytest.fixture
def allow() -> Allowlist:
    return Allowlist(
        values=["hxxp://Safe[.]example/Page", MD5.upper(), "203.0.113.9", "weird-thing"],
        cidrs=["10.0.0.0/8", "192.0.2.128/25", "2001:db8::/32"],
        domains=["Example.COM", "*.corp.example"],
    )


def test_empty_allowlist_is_falsy_and_matches_nothing():
    """An empty allowlist is false and allows nothing."""
    empty = Allowlist([], [], [])
    assert not empty
    assert not empty.matches("domain", "example.com")
    assert not empty.matches("ipv4", "10.0.0.1")


def test_non_empty_allowlist_is_truthy(allow):
    """Any entry makes the allowlist true."""
    assert allow
    assert Allowlist(cidrs=["10.0.0.0/8"])


def test_exact_values_match_after_canonicalisation(allow):
    """Configured values are canonicalised, so defanged or upper-case spellings still match."""
    assert allow.matches("url", "http://safe.example/Page")
    assert allow.matches("md5", MD5)
    assert not allow.matches("url", "http://safe.example/page")


def test_untypeable_value_matches_verbatim_case_insensitively(allow):
    """A value no type fits is kept as a raw, lower-cased string match."""
    assert allow.matches("url", "Weird-Thing")


def test_ipv4_inside_cidr(allow):
    """An IPv4 address inside an allow-listed CIDR matches; one outside does not."""
    assert allow.matches("ipv4", "10.255.0.1")
    assert allow.matches("ipv4", "192.0.2.200")
    assert not allow.matches("ipv4", "192.0.2.127")
    assert not allow.matches("ipv4", "11.0.0.1")


def test_ipv6_inside_cidr(allow):
    """An IPv6 address inside an allow-listed CIDR matches."""
    assert allow.matches("ipv6", "2001:db8:ffff::1")
    assert not allow.matches("ipv6", "2001:db9::1")


def test_exact_ip_value(allow):
    """An IP listed as a value matches exactly."""
    assert allow.matches("ipv4", "203.0.113.9")
    assert not allow.matches("ipv4", "203.0.113.10")


def test_cidr_entirely_inside_allowed_cidr(allow):
    """A network inside an allow-listed one matches; a wider or overlapping one does not."""
    assert allow.matches("cidr4", "10.1.2.0/24")
    assert allow.matches("cidr4", "10.0.0.0/8")
    assert allow.matches("cidr6", "2001:db8:1::/48")
    assert not allow.matches("cidr4", "10.0.0.0/7")
    assert not allow.matches("cidr4", "192.0.2.0/24")
    assert not allow.matches("cidr6", "2001:db8::/31")


def test_domain_and_subdomains(allow):
    """A domain matches itself and its subdomains."""
    assert allow.matches("domain", "example.com")
    assert allow.matches("domain", "a.b.example.com")
    assert allow.matches("hostname", "www.example.com")


def test_lookalike_domain_does_not_match(allow):
    """notexample.com is not a subdomain of example.com, nor is example.com.evil."""
    assert not allow.matches("domain", "notexample.com")
    assert not allow.matches("domain", "example.com.evil")
    assert not allow.matches("domain", "com")


def test_wildcard_domain_prefix_is_accepted(allow):
    """*.corp.example in the config means corp.example and below."""
    assert allow.matches("domain", "corp.example")
    assert allow.matches("domain", "mail.corp.example")


def test_email_domain(allow):
    """An email at an allow-listed domain (or subdomain) matches."""
    assert allow.matches("email", "Bob@mail.example.com")
    assert not allow.matches("email", "bob@notexample.com")


def test_url_host_by_domain(allow):
    """A url whose host is under an allow-listed domain matches."""
    assert allow.matches("url", "https://login.example.com:8443/x")
    assert not allow.matches("url", "https://notexample.com/example.com")


def test_url_host_by_cidr(allow):
    """A url whose IP host is inside an allow-listed CIDR matches."""
    assert allow.matches("url", "http://10.9.8.7/x")
    assert allow.matches("url", "http://[2001:db8::5]/x")
    assert not allow.matches("url", "http://11.0.0.1/x")


def test_url_host_by_exact_value(allow):
    """A url whose host is an allow-listed value matches."""
    assert allow.matches("url", "http://203.0.113.9:8080/x")
    assert Allowlist(values=["host.example"]).matches("url", "http://u@host.example/x")


def test_types_without_rules_match_only_exactly(allow):
    """Hashes match only as exact values."""
    assert not allow.matches("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-cidr", "2001:db8::/200"])
def test_invalid_cidr_raises_value_error(bad):
    """An invalid CIDR in the config is a ValueError naming it."""
    with pytest.raises(ValueError, match="invalid allowlist CIDR"):
        Allowlist(cidrs=[bad])


@pytest.mark.parametrize("bad", ["localhost", "-x.example", "a..example"])
def test_invalid_domain_raises_value_error(bad):
    """An invalid domain in the config is a ValueError naming it."""
    with pytest.raises(ValueError, match="invalid allowlist domain"):
        Allowlist(domains=[bad])


def test_equality_is_by_content():
    """Allowlists with the same canonical content are equal, whatever the spelling."""
    a = Allowlist(["1.2.3.4"], ["10.0.0.1/8"], ["Example.com."])
    b = Allowlist([" 1.2.3.4 "], ["10.0.0.0/8"], ["example.com"])
    assert a == b
    assert a != Allowlist(["1.2.3.4"], ["10.0.0.0/8"], [])
    assert a != "not an allowlist"


def test_many_cidrs_are_grouped_by_prefix_length():
    """Thousands of networks still match correctly (grouped lookup, not a linear scan)."""
    cidrs = [f"10.{i // 256}.{i % 256}.0/24" for i in range(5000)]
    allow = Allowlist(cidrs=cidrs)
    assert allow.matches("ipv4", "10.19.135.1")
    assert not allow.matches("ipv4", "10.20.136.1")
    assert len(allow._v4.lens) == 1
