"""Canonicalisation and type detection of indicator values."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctd.canon import canonicalize, detect_type, host_of_url
from ctd.errors import InvalidIndicator

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def reason(type_: str | None, value: str) -> str:
    with pytest.raises(InvalidIndicator) as info:
        canonicalize(type_, value)
    return str(info.value)


# --- cleaning and refanging -------------------------------------------------


def test_surrounding_whitespace_is_stripped():
    """Leading and trailing whitespace is not part of the value."""
    assert canonicalize("domain", " \texample.com\n") == ("domain", "example.com")


@pytest.mark.parametrize("raw", ['"example.com"', "'example.com'", "<example.com>"])
def test_surrounding_quotes_and_angle_brackets_are_stripped(raw):
    """A value quoted or wrapped in <> is unwrapped."""
    assert canonicalize("domain", raw) == ("domain", "example.com")


def test_defanged_url_is_refanged():
    """hxxps:// and [.] are refanged, and the path case is kept."""
    assert canonicalize(None, "hxxps://evil[.]example[.]com/Path") == (
        "url",
        "https://evil.example.com/Path",
    )


@pytest.mark.parametrize("scheme", ["hxxp", "HXXP", "hXXp", "Hxxp"])
def test_hxxp_in_any_case_becomes_http(scheme):
    """hxxp:// is refanged whatever its case."""
    assert canonicalize("url", f"{scheme}://a.example/") == ("url", "http://a.example/")


def test_hxxp_prefix_of_a_domain_is_not_refanged():
    """A domain that merely starts with hxxp is left alone."""
    assert canonicalize(None, "hxxpool.example") == ("domain", "hxxpool.example")
    assert canonicalize("url", "hxxp[:]//a.example/") == ("url", "http://a.example/")


@pytest.mark.parametrize("dot", ["[.]", "(.)", "{.}", "[dot]"])
def test_defanged_dots(dot):
    """[.], (.), {.} and [dot] are refanged to a dot."""
    assert canonicalize("domain", f"evil{dot}example") == ("domain", "evil.example")


def test_defanged_colon_and_scheme_separator():
    """[:] and [://] are refanged."""
    assert canonicalize("url", "http[:]//a.example/") == ("url", "http://a.example/")
    assert canonicalize("url", "https[://]a.example/") == ("url", "https://a.example/")


@pytest.mark.parametrize("at", ["[@]", "[at]", "(at)", "[AT]"])
def test_defanged_at_in_email(at):
    """[@] and [at] are refanged to @ in emails."""
    assert canonicalize("email", f"bob{at}evil[.]example") == ("email", "bob@evil.example")


def test_at_word_is_not_refanged_in_url_paths():
    """A literal (at) in a url path is data, not a defanged @."""
    assert canonicalize("url", "http://a.example/x(at)y") == ("url", "http://a.example/x(at)y")


def test_empty_value_is_rejected():
    """An empty or blank value is invalid."""
    assert reason("domain", "   ") == "empty value"


def test_unknown_type_is_rejected():
    """A type outside the indicator types is invalid."""
    assert "unknown indicator type" in reason("ip", "1.2.3.4")


# --- hashes -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "digest"), [("md5", MD5), ("sha1", SHA1), ("sha256", SHA256)])
def test_hashes_are_lower_cased(kind, digest):
    """Hashes are stored lower-case."""
    assert canonicalize(kind, digest.upper()) == (kind, digest)


@pytest.mark.parametrize(
    ("kind", "bad"),
    [("md5", MD5[:-1]), ("sha1", SHA1 + "0"), ("sha256", SHA256[:-1] + "g"), ("md5", "0x" + MD5[2:])],
)
def test_hash_of_wrong_length_or_non_hex_is_rejected(kind, bad):
    """Hashes must be exactly 32/40/64 hex digits."""
    assert reason(kind, bad).startswith(f"not a valid {kind}")


# --- IP addresses and networks -----------------------------------------------


def test_ipv4_is_accepted():
    """A dotted-quad IPv4 address is kept."""
    assert canonicalize("ipv4", "192.0.2.1") == ("ipv4", "192.0.2.1")


@pytest.mark.parametrize("bad", ["192.0.2.01", "256.1.1.1", "1.2.3", "1.2.3.4.5", "a.b.c.d", "1.2.3.4/32"])
def test_invalid_ipv4_is_rejected(bad):
    """Out-of-range, short, ambiguous leading-zero or non-numeric IPv4 is rejected."""
    assert reason("ipv4", bad) == "not a valid ipv4 address"


def test_ipv6_is_compressed():
    """IPv6 is stored in compressed lower-case form."""
    assert canonicalize("ipv6", "2001:0db8:0000::1") == ("ipv6", "2001:db8::1")
    assert canonicalize("ipv6", "2001:DB8:0:0:0:0:0:1") == ("ipv6", "2001:db8::1")


@pytest.mark.parametrize("raw", ["::ffff:1.2.3.4", "::1.2.3.4", "64:ff9b::1.2.3.4", "::ffff:0:0"])
def test_ipv6_with_embedded_ipv4_matches_ipaddress(raw):
    """Embedded-IPv4 forms are written exactly as ipaddress's compressed form."""
    assert canonicalize("ipv6", raw) == ("ipv6", IPv6Address(raw).compressed)


@given(st.ip_addresses(v=6), st.sampled_from(["compressed", "exploded"]), st.booleans())
def test_ipv6_text_always_matches_ipaddress(addr, form, upper):
    """The fast IPv6 path agrees with ipaddress's compressed form for every address."""
    raw = getattr(addr, form)
    assert canonicalize("ipv6", raw.upper() if upper else raw) == ("ipv6", addr.compressed)


@pytest.mark.parametrize("bad", ["2001:db8::1::2", "fe80::1%eth0", "12345::1", "1.2.3.4"])
def test_invalid_ipv6_is_rejected(bad):
    """Malformed or scoped IPv6 is rejected."""
    assert reason("ipv6", bad).startswith("not a valid ipv6 address")


def test_cidr4_is_normalised_to_network_address():
    """Host bits are cleared and the prefix length kept."""
    assert canonicalize("cidr4", "192.0.2.77/24") == ("cidr4", "192.0.2.0/24")


def test_cidr_given_single_address_stays_cidr():
    """A /32 or /128 (or a bare address) typed as a cidr stays a cidr."""
    assert canonicalize("cidr4", "1.2.3.4/32") == ("cidr4", "1.2.3.4/32")
    assert canonicalize("cidr4", "1.2.3.4") == ("cidr4", "1.2.3.4/32")
    assert canonicalize("cidr6", "2001:db8::1/128") == ("cidr6", "2001:db8::1/128")


def test_cidr6_is_compressed():
    """IPv6 networks are compressed with host bits cleared."""
    assert canonicalize("cidr6", "2001:0DB8:0000:0000::5/32") == ("cidr6", "2001:db8::/32")


@pytest.mark.parametrize(
    ("kind", "bad", "why"),
    [
        ("cidr4", "1.2.3.0/33", "not a valid ipv4 cidr"),
        ("cidr4", "2001:db8::/32", "not a valid ipv4 cidr"),
        ("cidr6", "10.0.0.0/8", "not a valid ipv6 cidr"),
        ("cidr6", "2001:db8::/129", "not a valid ipv6 cidr"),
    ],
)
def test_invalid_cidr_is_rejected(kind, bad, why):
    """Bad prefix lengths and the wrong IP version are rejected."""
    assert reason(kind, bad) == why


# --- domains ------------------------------------------------------------------


def test_domain_is_lower_cased_and_trailing_dot_dropped():
    """Domains are lower-case without the root dot."""
    assert canonicalize("domain", "WWW.Example.COM.") == ("domain", "www.example.com")


def test_idna_domain_becomes_punycode():
    """Internationalised names are stored as punycode."""
    assert canonicalize("domain", "bücher.example") == ("domain", "xn--bcher-kva.example")
    assert canonicalize("hostname", "BÜCHER.example") == ("hostname", "xn--bcher-kva.example")


def test_underscore_labels_are_accepted():
    """Underscores occur in real DNS names (SRV, DKIM) and are accepted."""
    assert canonicalize("hostname", "_dmarc.example.com") == ("hostname", "_dmarc.example.com")


@pytest.mark.parametrize(
    "bad",
    [
        "localhost",
        "-bad.example",
        "bad-.example",
        "a..example",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4) + ".com",
        "example.com..",
        "example.123",
        "ex!ample.com",
    ],
)
def test_invalid_domain_is_rejected(bad):
    """Single labels, bad hyphens, empty/long labels, long names, odd chars, numeric TLDs fail."""
    assert reason("domain", bad).startswith("not a valid")


def test_invalid_idna_is_rejected():
    """A non-ASCII name the IDNA codec cannot encode is invalid, not a crash."""
    assert reason("domain", "bü" * 40 + ".example") == "not a valid internationalised domain name"


# --- urls ---------------------------------------------------------------------


def test_url_scheme_and_host_lower_cased_path_kept():
    """Scheme and host are lower-cased; path, query and fragment are kept as is."""
    assert canonicalize("url", "HTTPS://WWW.Example.COM/A/B?Q=X#Frag") == (
        "url",
        "https://www.example.com/A/B?Q=X#Frag",
    )


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("http://a.example:80/x", "http://a.example/x"),
        ("https://a.example:443/x", "https://a.example/x"),
        ("http://a.example:443/x", "http://a.example:443/x"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("http://a.example:/x", "http://a.example/x"),
    ],
)
def test_url_default_port_is_removed(raw, canon):
    """:80 for http and :443 for https are dropped; other ports are kept."""
    assert canonicalize("url", raw) == ("url", canon)


def test_url_without_scheme_gets_http():
    """A typed url without a scheme is taken as http."""
    assert canonicalize("url", "evil.example/login") == ("url", "http://evil.example/login")


def test_url_host_is_idna_encoded():
    """An internationalised url host becomes punycode."""
    assert canonicalize("url", "http://Bücher.example/Ä") == ("url", "http://xn--bcher-kva.example/Ä")


def test_url_with_ipv6_host():
    """An IPv6 url host is compressed and stays bracketed."""
    assert canonicalize("url", "https://[2001:0DB8::0001]:443/p") == ("url", "https://[2001:db8::1]/p")


def test_url_with_ipv4_host_and_userinfo():
    """Userinfo is kept and only the host after the last @ is canonicalised."""
    assert canonicalize("url", "http://Paypal.com@192.0.2.1/x") == ("url", "http://Paypal.com@192.0.2.1/x")


def test_ftp_url_is_accepted():
    """ftp is a supported url scheme."""
    assert canonicalize("url", "FTP://Files.Example/pub") == ("url", "ftp://files.example/pub")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("javascript://alert(1)", "unsupported scheme"),
        ("file:///etc/passwd", "unsupported scheme"),
        ("http:///path", "no host"),
        ("http://localhost/", "not a valid domain"),
        ("http://1.2.3.999/", "not a valid url host"),
        ("http://a.example:99999/", "port"),
        ("http://a.example:8o/", "port"),
        ("http://2001:db8::1/", "ipv6"),
        ("http://[2001:db8::1/", "unclosed"),
    ],
)
def test_invalid_url_is_rejected(bad, why):
    """Unsupported schemes, missing/invalid hosts and bad ports are rejected."""
    assert why in reason("url", bad)


def test_host_of_url():
    """host_of_url strips userinfo, port and IPv6 brackets."""
    assert host_of_url("http://u:p@a.example:8080/x?y") == "a.example"
    assert host_of_url("https://[2001:db8::1]:8443/") == "2001:db8::1"
    assert host_of_url("http://192.0.2.1") == "192.0.2.1"


# --- email --------------------------------------------------------------------


def test_email_domain_canonicalised_local_part_kept():
    """The local part keeps its case; the domain is canonicalised."""
    assert canonicalize("email", "John.Doe@Bücher.Example") == ("email", "John.Doe@xn--bcher-kva.example")


def test_email_mailto_prefix_is_dropped():
    """A mailto: prefix is not part of the address."""
    assert canonicalize("email", "mailto:a@b.example") == ("email", "a@b.example")


@pytest.mark.parametrize("bad", ["a@b@c.example", "no-at.example", "@b.example"])
def test_invalid_email_is_rejected(bad):
    """Emails need exactly one @ and a non-empty local part (spaces: the value gate, tests/test_value_gate.py)."""
    assert reason("email", bad).startswith("not a valid email address")


def test_email_with_invalid_domain_is_rejected():
    """An email's domain must be a valid domain."""
    assert reason("email", "a@localhost") == "not a valid email domain 'localhost' (not a valid domain name)"


def test_bad_url_host_is_named():
    """A url rejected for its host says that the host is the problem and which host it is."""
    assert reason("url", "http://www..example.com/phishing") == (
        "not a valid url host 'www..example.com' (not a valid domain name)"
    )


# --- detection ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "canon"),
    [
        (MD5.upper(), "md5", MD5),
        (SHA1, "sha1", SHA1),
        (SHA256, "sha256", SHA256),
        ("192.0.2.1", "ipv4", "192.0.2.1"),
        ("2001:0db8::1", "ipv6", "2001:db8::1"),
        ("::1", "ipv6", "::1"),
        ("1.2.3.4/32", "cidr4", "1.2.3.4/32"),
        ("10.1.0.0/16", "cidr4", "10.1.0.0/16"),
        ("2001:db8::/32", "cidr6", "2001:db8::/32"),
        ("HTTP://A.example/X", "url", "http://a.example/X"),
        ("www.Example.com/Login", "url", "http://www.example.com/Login"),
        ("evil[.]example/x.php", "url", "http://evil.example/x.php"),
        ("bob[at]evil[.]example", "email", "bob@evil.example"),
        ("www.Example.com", "domain", "www.example.com"),
        ("bücher.example", "domain", "xn--bcher-kva.example"),
    ],
)
def test_auto_detection(raw, kind, canon):
    """Every indicator type is auto-detected (domains never as hostname)."""
    assert detect_type(raw) == kind
    assert canonicalize(None, raw) == (kind, canon)


@pytest.mark.parametrize("raw", ["", "hello", "1.2.3.999", "192.0.2.01", "not-a-value", "1.2.3.4:80", "a/b"])
def test_undetectable_values(raw):
    """Values of no recognisable type are not typed and cannot be canonicalised untyped."""
    assert detect_type(raw) is None
    assert reason(None, raw) == "cannot tell the indicator type"


def test_detected_but_invalid_reports_the_type_reason():
    """A value detected as url with a bad scheme says why it is invalid."""
    assert "unsupported scheme" in reason(None, "gopher://a.example/")


# --- idempotence ----------------------------------------------------------------

_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
_tld = st.from_regex(r"[a-zA-Z]{2,6}", fullmatch=True)
_domains = st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(_label, min_size=1, max_size=4), _tld)
# printable only: controls, format characters and spaces never pass the value gate
_paths = st.text(
    st.characters(
        min_codepoint=33, max_codepoint=0x2FF, exclude_characters="#?", exclude_categories=("Cc", "Cf", "Zs")
    ),
    max_size=20,
)

_valid = st.one_of(
    st.tuples(st.just("domain"), _domains),
    st.tuples(st.just("hostname"), _domains.map(lambda d: "Bü" + d)),
    st.tuples(st.just("ipv4"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("ipv6"), st.ip_addresses(v=6).map(lambda a: a.exploded)),
    st.tuples(st.just("cidr4"), st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 32))),
    st.tuples(st.just("cidr6"), st.builds(lambda a, p: f"{a.exploded}/{p}", st.ip_addresses(v=6), st.integers(0, 128))),
    st.tuples(st.just("md5"), st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True)),
    st.tuples(st.just("sha256"), st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True)),
    st.tuples(st.just("email"), st.builds(lambda local, d: f"{local}@{d}", _label, _domains)),
    st.tuples(
        st.just("url"),
        st.builds(
            lambda s, d, port, p: f"{s}://{d}{port}/{p}",
            st.sampled_from(["http", "HTTPS", "ftp", "hxxp"]),
            _domains,
            st.sampled_from(["", ":80", ":443", ":8080"]),
            _paths,
        ),
    ),
)


@given(_valid)
def test_canonicalize_is_idempotent(item):
    """Canonicalising a canonical value returns it unchanged, and so does auto-detection."""
    kind, raw = item
    once = canonicalize(kind, raw)
    assert canonicalize(kind, once[1]) == once
    assert canonicalize(None, once[1])[1] == once[1]
