"""Indicators in prose: ioc-finder's parsers behind ctd's own guards.

The pipeline, each step linear in the text:

1. cut the text at ``max_chars``;
2. neutralise what only looks like an indicator, in the text as written (so a
   value the author defanged is never touched): IPv4-shaped version numbers
   after a version keyword or in a version list (``firmware 7.2.4.1``,
   ``versions 1.0.0.2 through 1.3.2.5``), dotted code identifiers
   (``System.Net.WebClient``) and file names whose extension is also a TLD
   (``ChromeSetup.zip``, ``README.md``);
3. refang (``hxxp``, ``[.]``, ``(dot)``, ``[:]``, ``[@]``, ``[at]``, with or
   without spaces inside/around the brackets);
4. split into whitespace-delimited tokens, drop tokens longer than
   ``MAX_TOKEN_CHARS`` (no indicator is that long), and route each token to
   one parser family: URLs (``scheme://`` or ``host/path``), e-mail addresses
   (``@``), CIDR ranges, or the rest (domains, IPs, hashes).  Routing is what
   makes a URL's host or an address's domain not count a second time;
5. run ioc-finder's public ``parse_*`` functions on each route, chunk by chunk,
   stopping when ``time_budget`` seconds are spent (the result says so);
6. trim trailing punctuation from URLs, then ``ctd.canon.canonicalize`` (which
   applies ctd's one value gate, ``value_problem``: no control, format, bidi
   or space characters); drop values over ``MAX_TOKEN_CHARS`` and values on
   ``exclude_domains`` (the publisher).

ioc-finder's own ``find_iocs`` is not used: it refangs with ioc-fanger, which
rewrites prose ("the cat (a tabby)" becomes "the c@a tabby)"), and it runs
quadratic on some inputs (see docs/evaluations/ioc-extraction.md).  Neither
ioc-finder nor iocsearcher scores a confidence, so there is no confidence
knob; ``defanged_only`` keeps only the values the author defanged.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable
from typing import NamedTuple

with warnings.catch_warnings():
    # pyparsing >= 3.3 emits a diagnostic warning about one of ioc-finder's grammars at import
    # time (harmless for the parsers used here); silence it rather than fail under -W error.
    warnings.simplefilter("ignore")
    import ioc_finder

from ctd.model import InvalidIndicator, canonicalize, host_of_url

from .html import html_main_text, html_text

__all__ = [
    "EXTRACT_TYPES",
    "MAX_TOKEN_CHARS",
    "Extraction",
    "extract",
    "extract_detailed",
    "html_main_text",
    "html_text",
]

EXTRACT_TYPES: frozenset[str] = frozenset(
    ("url", "domain", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email")
)
MAX_TEXT_CHARS = 1024 * 1024
MAX_TOKEN_CHARS = 2048  # the longest URL worth blocking; everything longer is dropped
MAX_RESULTS = 10_000
MAX_AT_PER_TOKEN = 8  # more '@' in one token is a blob, not a list of addresses
CHUNK_CHARS = 64 * 1024
DEFAULT_TIME_BUDGET = 10.0

# --- step 2: what only looks like an indicator -----------------------------------------------
# Every pattern below can only start at a boundary (lookbehind) and uses possessive quantifiers,
# so each position of the text is looked at a bounded number of times.
_V4_IN_RUN = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\d|\.\d)")
_VNUM = r"v?\d++(?:\.\d++)++(?:[-+~][0-9A-Za-z.]++)?"
_VNOTE = r"(?:\s*+\([^()\n]{0,60}\))?"
_VKEYWORD = r"(?:versions?|ver|v|builds?|firmware|releases?|updates?|upgrade|patch(?:es|ed)?|fixed)"
_VASSIGN = r"""[\s:=#"']"""  # "version 7", "ver=7", '"ver": "7"'
_VSEP = r"\s*+(?:[,;/\u2013\u2014-]\s*+)?(?:(?:and|or|to|through|thru|until|before)\s++)?"
# A version keyword, then a list of version numbers, each maybe followed by a short note.
_VERSION_RUN = re.compile(
    rf"(?<![A-Za-z]){_VKEYWORD}(?:{_VASSIGN}++{_VKEYWORD})*+{_VASSIGN}*+{_VNUM}{_VNOTE}(?:{_VSEP}{_VNUM}{_VNOTE})*+",
    re.IGNORECASE,
)
# System.Net.WebClient, System.IO: every label capitalised, at least one lower-case letter.
_CODE_IDENT = re.compile(r"(?<![\w.])[A-Z][A-Za-z0-9]*+(?:\.[A-Z][A-Za-z0-9]*+)++(?!\w|\.\w)")
_HAS_LOWER = re.compile(r"[a-z]")
# A file name whose extension is also a TLD: written bare, it is a file, not a host.
_FILE_NAME = re.compile(
    r"(?<![\w./@\[(:-])[\w-]++\.(?:zip|mov|py|sh|md|rs|pl|pm|ps|so|one|cab)(?![\w\[(-]|\.\w)",
    re.IGNORECASE,
)

# --- step 3: refang ---------------------------------------------------------------------------
_DEFANG_SCHEME = re.compile(r"\bh(?:xx|\*\*|__)p(s?)(?=\s*+[\[(]?\s*+:)", re.IGNORECASE)
_DEFANG_BRACKETED = re.compile(r"\s?[\[({]\s*+(\.|dot|:|://|@|at)\s*+[\])}]\s?", re.IGNORECASE)
_REFANGED = {".": ".", "dot": ".", ":": ":", "://": "://", "@": "@", "at": "@"}

# --- step 4: routing --------------------------------------------------------------------------
_TOKEN = re.compile(r"\S++")
_CIDR_TOKEN = re.compile(r"(?<![\w.:])[0-9A-Fa-f.:]++/\d{1,3}(?!\d)")
_OPENERS = "([<'\""
# Worth handing to the (slow, per-candidate) e-mail grammar: local@label.x somewhere in the token.
_EMAIL_SHAPE = re.compile(r"(?<![^\s\[(<'\"=:,;])[^@\s]{1,64}@[A-Za-z0-9-]++\.[A-Za-z0-9]")

# --- step 6: clean-up -------------------------------------------------------------------------
_URL_TRAILING = ".,;:!?'\"*"
_CLOSERS = {")": "(", "]": "[", "}": "{", ">": "<"}


class Extraction(NamedTuple):
    """Sorted canonical ``(type, value)`` pairs; ``complete`` is False if a cap or the time budget cut the scan."""

    values: list[tuple[str, str]]
    complete: bool


def _neutralise(text: str) -> str:
    def dots_to_underscores(m: re.Match[str]) -> str:
        return m.group(0).replace(".", "_")

    def versions(m: re.Match[str]) -> str:
        return _V4_IN_RUN.sub(dots_to_underscores, m.group(0))

    def code(m: re.Match[str]) -> str:
        return dots_to_underscores(m) if _HAS_LOWER.search(m.group(0)) else m.group(0)

    text = _VERSION_RUN.sub(versions, text)
    text = _CODE_IDENT.sub(code, text)
    return _FILE_NAME.sub(dots_to_underscores, text)


def refang(text: str) -> str:
    """Undo the common defanging styles (linear; never touches unbracketed prose)."""

    def bracketed(m: re.Match[str]) -> str:
        return _REFANGED[m.group(1).lower()]

    text = _DEFANG_SCHEME.sub(lambda m: "http" + m.group(1), text)
    return _DEFANG_BRACKETED.sub(bracketed, text)


def _is_url_token(tok: str) -> bool:
    """``scheme://...`` or ``host.tld[:port]/...``."""
    if "://" in tok:
        return True
    slash = tok.find("/")
    if slash <= 0:
        return False
    host, _, port = tok[:slash].lstrip(_OPENERS).partition(":")
    tld = host.rpartition(".")[2]
    return "." in host and len(tld) >= 2 and tld.isascii() and tld.isalpha() and (not port or port.isdigit())


_IDNA_OK = re.compile(r"[a-z0-9.-]++")
_EDGE = "()[]<>{}'\"*,;:!?\u2018\u2019\u201c\u201d\u00ab\u00bb"


def _ascii_token(tok: str) -> str | None:
    """A token with non-ASCII text in the form ioc-finder reads, or None to drop it.

    ioc-finder's grammars are ASCII: ``bücher.com`` would read as ``cher.com`` and
    ``https://evil.com/päth`` as ``https://evil.com/p`` (both wrong values). A
    URL's host becomes punycode and the rest is percent-encoded as UTF-8 (its
    form on the wire); any other token must be a whole internationalised name.
    """
    if "://" in tok:
        start = tok.index("://") + 3
        end = next((i for i in range(start, len(tok)) if tok[i] in "/?#"), len(tok))
        host = _idna(tok[start:end])
        if host is None:
            return None
        rest = "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in tok[end:])
        return tok[:start] + host + rest
    core = tok.strip(_EDGE).rstrip(".")
    return _idna(core) if core else None


def _idna(name: str) -> str | None:
    if name.isascii():
        return name
    try:
        out = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    return out if _IDNA_OK.fullmatch(out) else None


def _route(tokens: Iterable[str]) -> dict[str, list[str]]:
    routes: dict[str, list[str]] = {"url": [], "email": [], "cidr": [], "plain": []}
    for tok in dict.fromkeys(tokens):  # a repeated token is parsed once
        if len(tok) > MAX_TOKEN_CHARS:
            continue
        if not tok.isascii():
            ascii_tok = _ascii_token(tok)
            if ascii_tok is None:
                continue
            tok = ascii_tok
        if _is_url_token(tok):
            routes["url"].append(tok)
        elif "@" in tok:
            if tok.count("@") <= MAX_AT_PER_TOKEN and _EMAIL_SHAPE.search(tok):
                routes["email"].append(tok)
        elif "/" in tok and _CIDR_TOKEN.search(tok):
            routes["cidr"].append(tok)
        else:
            routes["plain"].append(tok)
    return routes


def _parse_chunk(routes: dict[str, list[str]], types: frozenset[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if routes["url"] and "url" in types:
        found += [("url", u) for u in ioc_finder.parse_urls("\n".join(routes["url"]))]
    if routes["email"] and "email" in types:
        emails = ioc_finder.parse_complete_email_addresses("\n".join(routes["email"]))
        found += [("email", e) for e in emails]
    if routes["cidr"]:
        text = "\n".join(routes["cidr"])
        if "cidr4" in types:
            found += [("cidr4", c) for c in ioc_finder.parse_ipv4_cidrs(text)]
        if "cidr6" in types:
            found += [("cidr6", c) for c in ioc_finder.parse_ipv6_cidrs(text)]
    if routes["plain"]:
        text = "\n".join(routes["plain"])
        for kind, parse in _PLAIN_PARSERS:
            if kind in types:
                found += [(kind, v) for v in parse(text)]
    return found


_PLAIN_PARSERS = (
    ("domain", ioc_finder.parse_domain_names),
    ("ipv4", ioc_finder.parse_ipv4_addresses),
    ("ipv6", ioc_finder.parse_ipv6_addresses),
    ("md5", ioc_finder.parse_md5s),
    ("sha1", ioc_finder.parse_sha1s),
    ("sha256", ioc_finder.parse_sha256s),
)


def _trim_url(url: str) -> str:
    """Drop sentence punctuation and unbalanced closing brackets glued to a URL's end."""
    balance = {c: url.count(c) - url.count(o) for c, o in _CLOSERS.items()}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _URL_TRAILING:
            end -= 1
        elif balance.get(last, 0) > 0:
            balance[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def _host(kind: str, value: str) -> str | None:
    if kind == "url":
        return host_of_url(value)
    if kind == "email":
        return value.rpartition("@")[2]
    if kind == "domain":
        return value
    return None


def _excluded(host: str | None, excluded: tuple[str, ...]) -> bool:
    return host is not None and any(host == d or host.endswith("." + d) for d in excluded)


def _canonical(found: Iterable[tuple[str, str]], excluded: tuple[str, ...]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for kind, raw in found:
        if kind == "url":
            raw = _trim_url(raw)
        try:
            kind, value = canonicalize(kind, raw)
        except InvalidIndicator:
            continue
        if len(value) > MAX_TOKEN_CHARS:  # ctd's value gate (in canonicalize) caps urls at 8192 only
            continue
        if not _excluded(_host(kind, value), excluded):
            out.add((kind, value))
    return out


def _scan(text: str, types: frozenset[str], excluded: tuple[str, ...], deadline: float) -> tuple[set, bool]:
    found: set[tuple[str, str]] = set()
    chunk: list[str] = []
    size = 0
    complete = True
    tokens = (m.group(0) for m in _TOKEN.finditer(text))
    for tok in tokens:
        chunk.append(tok)
        size += len(tok) + 1
        if size < CHUNK_CHARS:
            continue
        found |= _canonical(_parse_chunk(_route(chunk), types), excluded)
        chunk, size = [], 0
        if len(found) >= MAX_RESULTS or time.monotonic() >= deadline:
            complete = next(tokens, None) is None
            return found, complete
    if chunk:
        found |= _canonical(_parse_chunk(_route(chunk), types), excluded)
    return found, complete


def extract_detailed(
    text: str,
    *,
    types: Iterable[str] = EXTRACT_TYPES,
    exclude_domains: Iterable[str] = (),
    defanged_only: bool = False,
    max_chars: int = MAX_TEXT_CHARS,
    time_budget: float = DEFAULT_TIME_BUDGET,
) -> Extraction:
    """Indicators in ``text``; ``complete`` is False when a cap or the time budget cut the scan short.

    ``exclude_domains`` drops values on those domains and their subdomains (the
    publisher's own pages and addresses).  ``time_budget`` is checked between
    chunks of about ``CHUNK_CHARS``, so one chunk may overrun it.
    """
    wanted = frozenset(types) & EXTRACT_TYPES
    excluded = tuple(d.strip(".").lower() for d in exclude_domains if d.strip("."))
    complete = len(text) <= max_chars
    original = _neutralise(text[:max_chars])
    deadline = time.monotonic() + time_budget
    found, scanned = _scan(refang(original), wanted, excluded, deadline)
    if defanged_only:
        plain, _ = _scan(original, wanted, excluded, deadline + time_budget)
        found -= plain
    values = sorted(found)[:MAX_RESULTS]
    return Extraction(values, complete and scanned and len(found) <= MAX_RESULTS)


def extract(text: str, **options) -> list[tuple[str, str]]:
    """Sorted canonical ``(type, value)`` pairs found in ``text`` (see ``extract_detailed``)."""
    return extract_detailed(text, **options).values
