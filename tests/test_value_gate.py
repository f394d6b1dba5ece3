"""The value validity gate at canonicalisation: control characters, separators, bidi controls, length caps."""

from __future__ import annotations

import pytest

from ctd.allowlist import Allowlist
from ctd.canon import canonicalize
from ctd.errors import InvalidIndicator
from ctd.model import INDICATOR_TYPES
from ctd.valuegate import MAX_LENGTH, value_problem

# Every character class the gate refuses inside a value, one representative list.
C0 = [chr(c) for c in range(0x20)]
C1 = [chr(c) for c in range(0x7F, 0xA0)]  # DEL and C1 (U+0085 NEL among them)
SEPARATORS = ["\u2028", "\u2029", "\u00a0", "\u1680", "\u2000", "\u3000", " "]
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]
INVISIBLE = ["\u200b", "\u200d", "\u00ad", "\ufeff", "\U000e0001"]
OTHER = ["\ud800", "\udfff", "\ue000", "\U000f0000", "\u0378"]  # lone surrogates, private use, unassigned
HOSTILE = C0 + C1 + SEPARATORS + BIDI + INVISIBLE + OTHER

# A valid value of each type, split where a hostile character is put.
SAMPLES = {
    "url": ("http://evil.example/a", "b"),
    "domain": ("evil", ".example"),
    "hostname": ("www", ".evil.example"),
    "email": ("bob", "@evil.example"),
    "ipv4": ("192.0.2", ".1"),
    "ipv6": ("2001:db8", "::1"),
    "cidr4": ("10.0.0.0", "/8"),
    "cidr6": ("2001:db8::", "/32"),
    "md5": ("d41d8cd98f00b204", "e9800998ecf8427e"),
    "sha1": ("da39a3ee5e6b4b0d3255", "bfef95601890afd80709"),
    "sha256": ("e3b0c44298fc1c149afbf4c8996fb924", "27ae41e4649b934ca495991b7852b855"),
}


def reason(type_: str | None, value: str) -> str:
    with pytest.raises(InvalidIndicator) as info:
        canonicalize(type_, value)
    return str(info.value)


# --- the findings' values ------------------------------------------------------


@pytest.mark.parametrize("type_", ["url", None])
@pytest.mark.parametrize(
    "value",
    [
        "http://evil.example/a\n10.0.0.0/8",
        "http://evil.example/a\r\n*.microsoft.com",
        "http://x\ninjected.example@evil.example/",
        "http://evil.example/a\r10.0.0.0/8",
        "http://evil.example/a\x0010.0.0.0/8",
        "http://evil.example/a\u202810.0.0.0/8",
        "http://evil.example/a\u202910.0.0.0/8",
        "http://evil.example/a\x8510.0.0.0/8",
        "http://evil.example/a\x1b[2Jx",
    ],
)
def test_list_injection_values_are_rejected(type_, value):
    """A value carrying a line break or control character is rejected, typed or auto-detected."""
    assert reason(type_, value).startswith("contains ")


@pytest.mark.parametrize("type_", sorted(SAMPLES))
@pytest.mark.parametrize("ch", HOSTILE, ids=lambda c: f"U+{ord(c):04X}")
def test_every_type_refuses_every_hostile_character(type_, ch):
    """Each refused character class is refused inside a value of every type."""
    head, tail = SAMPLES[type_]
    assert canonicalize(type_, head + tail)[0] == type_  # the sample itself is valid
    with pytest.raises(InvalidIndicator):
        canonicalize(type_, head + ch + tail)


def test_samples_cover_every_type():
    """The table above has a sample for every indicator type."""
    assert set(SAMPLES) == set(INDICATOR_TYPES)


# --- reasons -------------------------------------------------------------------


def test_reason_names_the_character_and_its_offset():
    """The reason says which character was found and where, in the value as given."""
    assert reason("url", "http://evil.example/a\n10.0.0.0/8") == "contains a control character U+000A at offset 21"
    assert reason("url", "  http://evil.example/a\n10.0.0.0/8") == "contains a control character U+000A at offset 23"


@pytest.mark.parametrize(
    ("ch", "kind"),
    [
        ("\x7f", "a control character U+007F"),
        ("\x85", "a control character U+0085"),
        ("\u2028", "a line separator U+2028"),
        ("\u2029", "a paragraph separator U+2029"),
        ("\u202e", "a bidi control character U+202E"),
        ("\u2066", "a bidi control character U+2066"),
        (" ", "whitespace U+0020"),
        ("\u00a0", "whitespace U+00A0"),
        ("\u200b", "an invisible format character U+200B"),
        ("\ud800", "a lone surrogate U+D800"),
        ("\ue000", "a private-use character U+E000"),
        ("\u0378", "an unassigned character U+0378"),
    ],
)
def test_reason_says_what_kind_of_character(ch, kind):
    """Each class of refused character is named in the reason."""
    assert reason("url", f"http://a.example/{ch}x") == f"contains {kind} at offset 17"


def test_too_long_reason_never_echoes_the_value():
    """An over-long value is refused by its length; the reason is short and quotes nothing."""
    r = reason("url", "http://a.example/" + "a" * 10_000_000)
    assert r == "longer than 8192 characters (10000017)"


# --- what is still accepted ------------------------------------------------------


def test_surrounding_whitespace_and_controls_are_stripped():
    """Whitespace (a CRLF line ending, a tab) around the value is not part of it."""
    assert canonicalize("url", "\t http://a.example/x\r\n") == ("url", "http://a.example/x")
    assert canonicalize(None, "\u2028evil.example\x85") == ("domain", "evil.example")


def test_spaces_inside_defang_brackets_are_refanged():
    """``evil[ . ]example`` is a defanged dot, not a space inside a value."""
    assert canonicalize("domain", "evil[ . ]example") == ("domain", "evil.example")


def test_line_break_inside_defang_brackets_is_not_refanged():
    """A line break is never absorbed by refanging: the value is refused."""
    assert "U+000A" in reason("domain", "evil[\n.]example")


def test_printable_unicode_in_url_path_is_kept():
    """Printable non-ASCII text in a URL path is data (only the gate's classes are refused)."""
    assert canonicalize("url", "http://a.example/caf\u00e9/\u6587") == ("url", "http://a.example/caf\u00e9/\u6587")


def test_internationalised_domain_still_accepted():
    """A printable IDN is converted to punycode as before."""
    assert canonicalize("domain", "b\u00fccher.example") == ("domain", "xn--bcher-kva.example")


# --- length caps -------------------------------------------------------------------


def test_url_cap_is_8192_characters():
    """A URL of exactly 8192 characters is accepted; one more is refused."""
    base = "http://a.example/"
    ok = base + "a" * (8192 - len(base))
    assert canonicalize("url", ok) == ("url", ok)
    assert reason("url", ok + "a") == "longer than 8192 characters (8193)"
    assert reason(None, ok + "a") == "longer than 8192 characters (8193)"


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_every_type_has_a_cap(type_):
    """Each type has a length cap, enforced typed and after auto-detection."""
    cap = MAX_LENGTH[type_]
    head, tail = SAMPLES[type_]
    long = head + "0" * cap + tail
    assert reason(type_, long).startswith(f"longer than {cap} characters")


def test_auto_detected_email_gets_the_email_cap():
    """An untyped value is capped again by the type it is detected as."""
    value = "a" * 2000 + "@evil.example"
    assert reason(None, value) == f"longer than {MAX_LENGTH['email']} characters ({len(value)})"


# --- the gate as a function ----------------------------------------------------------


def test_value_problem_is_none_for_a_clean_value():
    """A stored-ready value passes the gate."""
    assert value_problem("http://a.example/x", "url") is None


def test_value_problem_does_not_strip():
    """Renderers use the gate on stored values as they are: a trailing newline is a problem there."""
    assert value_problem("evil.example\n", "domain") == "contains a control character U+000A at offset 12"


# --- the allowlist -------------------------------------------------------------------


def test_allowlist_value_with_control_character_is_a_config_error():
    """An allowlist value containing a control character is refused, not kept as a raw entry."""
    with pytest.raises(ValueError, match="U\\+000A"):
        Allowlist(values=["good.example\nbad.example"])


def test_allowlist_domain_with_control_character_is_a_config_error():
    """An allowlist domain containing a control character is refused."""
    with pytest.raises(ValueError, match="U\\+0000"):
        Allowlist(domains=["micro\x00soft.com"])


def test_cap_holds_for_the_canonical_value():
    """A value that grows past its cap when canonicalised (an added scheme) is refused, so no renderer refuses it."""
    raw = "a.example/" + "a" * (8192 - len("a.example/"))
    assert len(raw) == 8192
    assert reason("url", raw) == "longer than 8192 characters (8199)"
    assert reason(None, raw) == "longer than 8192 characters (8199)"


def test_allowlist_defanged_value_with_spaces_still_accepted():
    """An allowlist value the canonicaliser accepts (spaces inside defang brackets) is not refused by the gate."""
    assert Allowlist(values=["safe[ . ]example"]).matches("domain", "safe.example")
