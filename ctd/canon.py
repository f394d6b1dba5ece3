"""Indicator canonicalisation: one spelling per ``(type, value)`` identity.

This runs on every ingested value, so the common case (an already-canonical
ASCII value of a known type) must stay cheap: patterns are compiled once, the
refang pass and the IDNA codec only run when the value needs them, and IPv4
is validated by a regex that accepts only the canonical dotted quad.
IPv6 text must equal ``ipaddress.IPv6Address(v).compressed``.

Every value returned passes the value gate (``ctd.valuegate``), whatever its
type: a length cap per type, and printable text only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from socket import AF_INET6, inet_ntop, inet_pton

from ctd.errors import InvalidIndicator
from ctd.valuegate import MAX_LENGTH, MAX_UNTYPED, require_printable, too_long, value_problem

__all__ = ["candidates", "canonicalize", "detect_type", "host_of_url", "is_ip"]

_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
_HASH_BY_LEN = {n: t for t, n in _HASH_LENGTHS.items()}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")

# Only the canonical dotted quad matches (no leading zeros, each octet <= 255),
# which is exactly what ipaddress accepts, so a match needs no reformatting.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")

_HXXP_RE = re.compile(r"hxxps?(?::|\[:)", re.IGNORECASE)
_AUTH_END = re.compile(r"[/?#]")

# Defanged spellings seen in feeds and reports.  "at" is only refanged where an
# email is plausible: a url path may legitimately contain "(at)".  Only spaces
# pad a defang: a line break or control inside brackets must reach the gate.
_DEFANG_RE = re.compile(r"[\[({] *(\.|dot|:|://|@) *[\])}]", re.IGNORECASE)
_DEFANG_AT_RE = re.compile(r"[\[({] *(\.|dot|:|://|@|at) *[\])}]", re.IGNORECASE)
_REFANGED = {".": ".", "dot": ".", ":": ":", "://": "://", "@": "@", "at": "@"}

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_QUOTES = {'"': '"', "'": "'", "<": ">"}


def _refang_sub(m: re.Match[str]) -> str:
    return _REFANGED[m.group(1).lower()]


def _clean(value: str, allow_at: bool) -> str:
    """Strip whitespace/quotes and refang, touching only values that need it."""
    v = value.strip()
    if v and v[0] in _QUOTES and v[-1] == _QUOTES[v[0]] and len(v) > 1:
        v = v[1:-1].strip()
    # only as a scheme: "hxxpool.example" is a real domain
    if v[:1] in ("h", "H") and _HXXP_RE.match(v):
        v = "http" + v[4:]
    if "[" in v or "(" in v or "{" in v:
        v = (_DEFANG_AT_RE if allow_at else _DEFANG_RE).sub(_refang_sub, v)
    return v


def _gate_reason(value: str, v: str, type_: str | None) -> str | None:
    """The gate's reason for the cleaned ``v`` (positions in the raw ``value`` when cleaning only trimmed it)."""
    return value_problem(v, type_, offset=max(value.find(v), 0))


def _domain(v: str) -> str:
    if not v.isascii():
        require_printable(v)  # IDNA would silently drop invisible characters (soft hyphen, ZWJ...)
        try:
            v = v.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidIndicator("not a valid internationalised domain name") from None
    v = v.lower()
    if v.endswith("."):
        v = v[:-1]
    if len(v) > 253 or not _DOMAIN_RE.fullmatch(v):
        raise InvalidIndicator("not a valid domain name")
    if v[v.rfind(".") + 1 :].isdigit():
        raise InvalidIndicator("not a valid domain name (numeric top-level label)")
    return v


def _ipv4(v: str) -> str:
    if not _IPV4_RE.fullmatch(v):
        raise InvalidIndicator("not a valid ipv4 address")
    return v


def _ipv6(v: str) -> str:
    if "%" in v:  # a scope id names a local interface, not an indicator
        raise InvalidIndicator("not a valid ipv6 address (scope id)")
    # The C round trip is ~15x faster than ipaddress and gives the same RFC 5952
    # text, except that it writes embedded-IPv4 forms dotted: those, and
    # anything it refuses, go through ipaddress, which stays the reference.
    try:
        text = inet_ntop(AF_INET6, inet_pton(AF_INET6, v))
        if "." not in text:
            return text
    except (OSError, ValueError):
        pass
    try:
        return IPv6Address(v).compressed
    except ValueError:
        raise InvalidIndicator("not a valid ipv6 address") from None


def _cidr4(v: str) -> str:
    try:
        return IPv4Network(v, strict=False).with_prefixlen
    except ValueError:
        raise InvalidIndicator("not a valid ipv4 cidr") from None


def _cidr6(v: str) -> str:
    if "%" in v:
        raise InvalidIndicator("not a valid ipv6 cidr (scope id)")
    try:
        return IPv6Network(v, strict=False).with_prefixlen
    except ValueError:
        raise InvalidIndicator("not a valid ipv6 cidr") from None


def _hash(kind: str) -> Callable[[str], str]:
    n = _HASH_LENGTHS[kind]
    reason = f"not a valid {kind} (expected {n} hex digits)"

    def canon(v: str) -> str:
        if len(v) != n or not _HEX_RE.fullmatch(v):
            raise InvalidIndicator(reason)
        return v.lower()

    return canon


def _email(v: str) -> str:
    require_printable(v)
    if v[:7].lower() == "mailto:":
        v = v[7:]
    if v.count("@") != 1:
        raise InvalidIndicator("not a valid email address (needs exactly one @)")
    local, _, dom = v.partition("@")
    if not local:  # whitespace and controls never get here (the gate)
        raise InvalidIndicator("not a valid email address (bad local part)")
    try:
        return f"{local}@{_domain(dom)}"
    except InvalidIndicator as exc:
        raise InvalidIndicator(f"not a valid email domain {_part(dom)} ({exc})") from None


def _part(text: str) -> str:
    """A part of a bad value for a reason (the whole value is quoted by whoever reports it)."""
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _url_host(host: str) -> str:
    if not host:
        raise InvalidIndicator("not a valid url (no host)")
    if host[-1].isdigit():  # a numeric last label can only be an IPv4 address
        if _IPV4_RE.fullmatch(host):
            return host
        raise InvalidIndicator(f"not a valid url host {_part(host)} (not an ipv4 address or a domain name)")
    try:
        return _domain(host)
    except InvalidIndicator as exc:  # say that the host is the problem, and which host
        raise InvalidIndicator(f"not a valid url host {_part(host)} ({exc})") from None


def _url(v: str) -> str:
    i = v.find("://")
    if i < 0:
        v = "http://" + v
        i = 4
    scheme = v[:i].lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        raise InvalidIndicator(f"not a valid url (unsupported scheme {scheme[:16]!r})")
    start = i + 3
    m = _AUTH_END.search(v, start)
    end = m.start() if m else len(v)
    userinfo, at, hostport = v[start:end].rpartition("@")
    # Only userinfo and path/query/fragment are kept as given: scheme, host and
    # port must match fixed alphabets below.
    rest = v[end:]
    if not rest.isprintable() or " " in rest:  # require_printable, inlined: every url passes here
        require_printable(rest)
    if userinfo:
        require_printable(userinfo)
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise InvalidIndicator("not a valid url host (unclosed '[')")
        host = "[" + _ipv6(hostport[1:close]) + "]"
        after = hostport[close + 1 :]
        if after and after[0] != ":":
            raise InvalidIndicator("not a valid url host")
        port = after[1:]
    else:
        host, _, port = hostport.partition(":")
        if ":" in port:
            raise InvalidIndicator("not a valid url host (unbracketed ipv6?)")
        host = _url_host(host)
    if port:
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise InvalidIndicator("not a valid url port")
        port = "" if int(port) == default_port else f":{int(port)}"
    return f"{scheme}://{userinfo}{at}{host}{port}{rest}"


_CANON = {
    "url": _url,
    "domain": _domain,
    "hostname": _domain,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "cidr4": _cidr4,
    "cidr6": _cidr6,
    "md5": _hash("md5"),
    "sha1": _hash("sha1"),
    "sha256": _hash("sha256"),
    "email": _email,
}
# One lookup on the hot path: the type's canonicaliser and its length cap.
_BY_TYPE = {t: (fn, MAX_LENGTH[t]) for t, fn in _CANON.items()}


def _is_domain(v: str) -> bool:
    try:
        _domain(v)
    except InvalidIndicator:
        return False
    return True


def _detect(v: str) -> tuple[str, str | None] | None:
    """Type of a cleaned value, plus its canonical form when detection computed it."""
    if not v:
        return None
    kind = _HASH_BY_LEN.get(len(v))
    if kind is not None and _HEX_RE.fullmatch(v):
        return kind, v.lower()
    if "://" in v:
        return "url", None
    if "/" in v:
        if ":" in v:
            try:
                return "cidr6", _cidr6(v)
            except InvalidIndicator:
                pass
        elif v[0].isdigit():
            try:
                return "cidr4", _cidr4(v)
            except InvalidIndicator:
                pass
        # "www.x/..." per design, and more generally "host/path" with a real host
        head = v[: v.find("/")].partition(":")[0]
        if v[:4].lower() == "www." or _IPV4_RE.fullmatch(head) or _is_domain(head):
            return "url", None
        return None
    if "@" in v:
        return "email", None
    if ":" in v:
        try:
            return "ipv6", _ipv6(v)
        except InvalidIndicator:
            return None
    if v[-1].isdigit():
        return ("ipv4", v) if _IPV4_RE.fullmatch(v) else None
    try:
        return "domain", _domain(v)
    except InvalidIndicator:
        return None


def detect_type(value: str) -> str | None:
    """Guess the indicator type of a raw value (never ``hostname``), or None."""
    if len(value) > MAX_UNTYPED:
        return None
    v = _clean(value, allow_at="://" not in value)
    if _gate_reason(value, v, None) is not None:
        return None
    found = _detect(v)
    return found[0] if found else None


def canonicalize(type_: str | None, value: str) -> tuple[str, str]:
    """Return ``(type, canonical value)``; raise InvalidIndicator with a short reason.

    The validity gate (``value_problem``) holds for every value returned: the
    length cap is checked first, on the raw value; the characters by the type's
    validator (``_printable`` or a fixed alphabet), and a refusal then carries
    the gate's reason when it has one.
    """
    if type_ is None:
        if len(value) > MAX_UNTYPED:  # before any other work on it
            raise InvalidIndicator(too_long(MAX_UNTYPED, len(value)))
        v = _clean(value, allow_at="://" not in value)
        found = _detect(v)
        if found is None:
            raise InvalidIndicator(_gate_reason(value, v, None) or "cannot tell the indicator type")
        type_, canon = found
        fn, cap = _BY_TYPE[type_]
        if len(value) > cap:  # the detected type's own cap
            raise InvalidIndicator(too_long(cap, len(value)))
        if canon is not None:
            return type_, canon
    else:
        try:
            fn, cap = _BY_TYPE[type_]
        except KeyError:
            raise InvalidIndicator(f"unknown indicator type {str(type_)[:32]!r}") from None
        if len(value) > cap:
            raise InvalidIndicator(too_long(cap, len(value)))
        v = _clean(value, allow_at=type_ == "email")
        if not v:
            raise InvalidIndicator("empty value")
    try:
        canon = fn(v)
    except InvalidIndicator:
        reason = _gate_reason(value, v, type_)
        if reason is None:
            raise
        raise InvalidIndicator(reason) from None
    if len(canon) > cap:  # grown past the cap: an added "http://", a punycode host
        raise InvalidIndicator(too_long(cap, len(canon)))
    return type_, canon


def host_of_url(url: str) -> str:
    """The host of a canonical url: no userinfo, port or IPv6 brackets."""
    i = url.find("://")
    start = i + 3 if i >= 0 else 0
    m = _AUTH_END.search(url, start)
    hostport = url[start : m.start() if m else len(url)].rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")]
    return hostport.partition(":")[0]


def is_ip(host: str) -> bool:
    """Whether a canonical host is an IP literal (as returned by host_of_url)."""
    return ":" in host or bool(_IPV4_RE.fullmatch(host))


def candidates(value: str, type_: str | None) -> list[tuple[str, str]]:
    """Canonical (type, value) pairs a user-typed value may stand for."""
    # Imported here: ctd.model re-exports canonicalize, so this module must not import it at load.
    from ctd.model import INDICATOR_TYPES

    types = [type_] if type_ else [t for t in (detect_type(value),) if t] + list(INDICATOR_TYPES)
    out = []
    for t in dict.fromkeys(types):
        try:
            pair = canonicalize(t, value)
        except InvalidIndicator:
            continue
        if pair not in out:
            out.append(pair)
    return out
