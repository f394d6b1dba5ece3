"""The value gate: what may be stored as an indicator value, or written as one list line.

Every value ``ctd.canon.canonicalize`` returns passes it, whatever its type: a
length cap per type, and no character that is not printable text (controls,
line/paragraph separators, bidi and other invisible format characters,
whitespace inside the value, surrogates, private-use or unassigned code
points). A list a firewall reads is one value per line: a value that could
become two lines, or look different from what it is, is never stored. The
line-oriented renderers run the same gate again on what they write.
"""

from __future__ import annotations

import unicodedata

from ctd.errors import InvalidIndicator

__all__ = ["MAX_LENGTH", "MAX_UNTYPED", "require_printable", "too_long", "value_problem"]

# The longest value accepted per type, in characters, checked on the raw value
# before any other work and again on the canonical value. Generous over the canonical limits (a domain is at
# most 253 characters) so quotes, padding and defanging still fit.
MAX_LENGTH = {
    "url": 8192,
    "domain": 1024,
    "hostname": 1024,
    "email": 1024,
    "ipv4": 256,
    "ipv6": 256,
    "cidr4": 256,
    "cidr6": 256,
    "md5": 256,
    "sha1": 256,
    "sha256": 256,
}
MAX_UNTYPED = max(MAX_LENGTH.values())  # before auto-detection has chosen a type


# Bidi embeddings/overrides/isolates and the invisible direction marks.
_BIDI = frozenset((*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C))
_KINDS = {
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "whitespace",
    "Cs": "a lone surrogate",
    "Cf": "an invisible format character",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
}


def _kind(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x20 or 0x7F <= cp <= 0x9F:
        return "a control character"
    if cp in _BIDI:
        return "a bidi control character"
    return _KINDS.get(unicodedata.category(ch), "an unprintable character")


def too_long(cap: int, n: int) -> str:
    """The reason for a value over its cap."""
    return f"longer than {cap} characters ({n})"  # the length only: never echo a huge value


def value_problem(value: str, type_: str | None = None, *, offset: int = 0) -> str | None:
    """Why ``value`` can be neither stored nor written as one list line, or None if it can.

    The one validity gate: canonicalisation applies it to every (cleaned)
    value and the line-oriented renderers to every value they write, as is
    (nothing stripped). ``offset`` is added to reported positions (where the
    checked text starts in what the caller was given).
    """
    cap = MAX_UNTYPED if type_ is None else MAX_LENGTH.get(type_, MAX_UNTYPED)  # None: not yet typed
    if len(value) > cap:
        return too_long(cap, len(value))
    # Both are single C-level scans: the common, clean value costs almost nothing.
    if value.isprintable() and " " not in value:
        return None
    for i, ch in enumerate(value):
        if ch == " " or not ch.isprintable():
            return f"contains {_kind(ch)} U+{ord(ch):04X} at offset {offset + i}"
    return None  # pragma: no cover - isprintable() and the scan agree


def require_printable(v: str) -> None:
    """The gate's character test, for the types whose text passes into the stored value as is.

    Domains, IPs, networks and hashes need no scan on the hot path: their
    validators accept only a fixed ASCII alphabet (or re-render the value), so
    any refused character fails them anyway, and ``ctd.canon.canonicalize`` then
    reports the gate's reason (``value_problem``).
    """
    if not v.isprintable() or " " in v:
        raise InvalidIndicator("not printable text")  # canonicalize says which character, and where
