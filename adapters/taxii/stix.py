"""STIX 2.1 patterns: read the ones that name IoCs into values, write one per IoC.

Reading uses the OASIS reference grammar (``stix2-patterns``, ANTLR) rather
than regexes: quoting, escapes, parentheses and operator precedence are the
grammar's business, and a pattern it rejects is malformed, not "unsupported".

We then walk the parse tree. An observation's comparisons are brought to a
disjunction of conjunctions (OR of ANDs), and each conjunction is reduced to
what an IoC list can hold, the way real producers write one object:

* its **primary** comparisons are ``=`` (or ``IN``) on a path that names an
  IoC: ``url:value``, ``domain-name:value``, ``ipv4-addr:value``,
  ``ipv6-addr:value``, ``email-addr:value``, ``file:hashes.*``, and how
  MISP's exporter writes an address: ``network-traffic:dst_ref.value`` /
  ``src_ref.value`` (ip-dst, ip-src, with ``dst_ref.type`` saying its kind)
  and ``email-message:from_ref.value`` / ``sender_ref.value`` (email-src);
* every other comparison must **only qualify** that same object (a file's
  name, size or zipped content beside its hashes; what a domain resolves to;
  a traffic's ``dst_ref.type``), or be the port or protocol of its traffic
  (``network-traffic:dst_port``: ctd drops ports everywhere);
* then each primary value is an IoC. Several primaries must be hashes of one
  file, one per algorithm: each is its own IoC (they identify the same file).

Anything else cannot be reduced safely and is **unsupported** (not
malformed): two different values ANDed (they only match together), a
conjunction with no primary (``file:name`` alone, x509 certificate hashes,
``MATCHES``/``LIKE``/ordering alone), observations joined by AND or
FOLLOWEDBY, and qualified observations (WITHIN, REPEATS, START/STOP), which
correlate in time. In an OR, the reducible alternatives are kept and the
others reported as skipped.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from stix2patterns.exceptions import ParseException
from stix2patterns.v21.grammars.STIXPatternParser import STIXPatternParser as P
from stix2patterns.v21.pattern import Pattern

# ctd's namespace for deterministic indicator ids (uuid5(NAMESPACE_URL, "urn:ctd:stix-indicator")).
CTD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ctd:stix-indicator")

# Primary paths -> ctd type; the ip ones split into address/cidr by value. A ``*_ref.value`` is
# typed by its ``*_ref.type`` comparison, else by its value (an address, a network or a domain: None).
_PATHS: dict[tuple[str, ...], str | None] = {
    ("url", "value"): "url",
    ("domain-name", "value"): "domain",
    ("ipv4-addr", "value"): "ipv4",
    ("ipv6-addr", "value"): "ipv6",
    ("email-addr", "value"): "email",
    ("file", "hashes", "MD5"): "md5",
    ("file", "hashes", "SHA1"): "sha1",
    ("file", "hashes", "SHA256"): "sha256",
    ("network-traffic", "dst_ref", "value"): None,
    ("network-traffic", "src_ref", "value"): None,
    ("email-message", "from_ref", "value"): "email",
    ("email-message", "sender_ref", "value"): "email",
}
_REF_TYPES = {"ipv4-addr": "ipv4", "ipv6-addr": "ipv6", "domain-name": "domain"}
# Comparisons on another object that still only qualify: the port or protocol of the traffic.
_TRAFFIC_DETAILS = frozenset(("dst_port", "src_port", "protocols"))
MAX_TERMS = 256  # conjunctions an observation may expand to (OR of ANDs): past that, unsupported

# ctd type -> the object path written in patterns (hash names as the STIX vocabulary spells them).
_WRITE: dict[str, str] = {
    "url": "url:value",
    "domain": "domain-name:value",
    "hostname": "domain-name:value",
    "ipv4": "ipv4-addr:value",
    "cidr4": "ipv4-addr:value",
    "ipv6": "ipv6-addr:value",
    "cidr6": "ipv6-addr:value",
    "email": "email-addr:value",
    "md5": "file:hashes.MD5",
    "sha1": "file:hashes.'SHA-1'",
    "sha256": "file:hashes.'SHA-256'",
}

_OPS = {
    P.PropTestOrderContext: "ordering",
    P.PropTestLikeContext: "LIKE",
    P.PropTestRegexContext: "MATCHES",
    P.PropTestIsSubsetContext: "ISSUBSET",
    P.PropTestIsSupersetContext: "ISSUPERSET",
    P.PropTestExistsContext: "EXISTS",
}


class MalformedPattern(ValueError):
    """The pattern does not parse under the STIX 2.1 grammar."""


class UnsupportedPattern(ValueError):
    """The pattern parses but names no IoC value ctd can list."""


class Reduced(NamedTuple):
    """What a pattern lists: (ctd type or None for "an address by its value", raw value), and what was skipped."""

    terms: list[tuple[str | None, str]]
    skipped: list[str]


class _Cmp(NamedTuple):
    """One comparison: its object path, operator, string value (None if it is no string) and text."""

    path: tuple[str, ...]
    op: str
    value: str | None
    text: str


def _hash_key(name: str) -> str:
    # 'SHA-256', SHA256 and sha-256 all name the same algorithm in the wild.
    return name.upper().replace("-", "").replace("_", "")


def _unquote(token: str) -> str:
    """A StringLiteral token's value (the grammar's escapes are \\' and \\\\)."""
    out: list[str] = []
    body = token[1:-1]
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            i += 1
            c = body[i]
        out.append(c)
        i += 1
    return "".join(out)


def _flatten(comp, steps: list) -> None:
    """objectPathComponent is left-recursive (pathStep: component component): list its leaves in order."""
    if comp is None:
        return
    if isinstance(comp, P.PathStepContext):
        for child in comp.objectPathComponent():
            _flatten(child, steps)
    else:
        steps.append(comp)


def _path(ctx: P.ObjectPathContext) -> tuple[str, ...]:
    parts = [ctx.objectType().getText()]
    first = ctx.firstPathComponent()
    parts.append(_unquote(first.getText()) if first.StringLiteral() else first.getText())
    steps: list = []
    _flatten(ctx.objectPathComponent(), steps)
    for step in steps:
        if isinstance(step, P.IndexPathStepContext):
            parts.append("*" if step.ASTERISK() else step.getText()[1:-1])
            continue
        lit = step.StringLiteral()
        parts.append(_unquote(lit.getText()) if lit else step.IdentifierWithoutHyphen().getText())
    if parts[0] == "file" and len(parts) == 3 and parts[1] == "hashes":
        parts[2] = _hash_key(parts[2])
    return tuple(parts)


def _show(path: tuple[str, ...]) -> str:
    return f"{path[0]}:" + ".".join(path[1:]).replace(".*", "[*]")


def _string(lit: P.PrimitiveLiteralContext) -> str | None:
    orderable = lit.orderableLiteral()
    token = orderable.StringLiteral() if orderable is not None else None
    return _unquote(token.getText()) if token is not None else None


def _cmp(path: tuple[str, ...], op: str, value: str | None) -> _Cmp:
    return _Cmp(path, op, value, f"{_show(path)} {op}")


def _dnf(node) -> list[list[_Cmp]]:
    """A comparison expression as an OR of ANDs of comparisons (raises UnsupportedPattern past MAX_TERMS)."""
    if isinstance(node, P.ComparisonExpressionContext):
        if node.OR() is not None:
            a, b = node.comparisonExpression()
            return _dnf(a) + _dnf(b)
        return _dnf(node.comparisonExpressionAnd())
    if isinstance(node, P.ComparisonExpressionAndContext):
        if node.AND() is not None:
            a, b = node.comparisonExpressionAnd()
            left, right = _dnf(a), _dnf(b)
            if len(left) * len(right) > MAX_TERMS:
                raise UnsupportedPattern(f"more than {MAX_TERMS} alternatives once its ANDs are distributed")
            return [x + y for x in left for y in right]
        return _dnf(node.propTest())
    if isinstance(node, P.PropTestParenContext):
        return _dnf(node.comparisonExpression())
    if isinstance(node, P.PropTestEqualContext):
        op = "!=" if node.NOT() or node.NEQ() else "="
        return [[_cmp(_path(node.objectPath()), op, _string(node.primitiveLiteral()))]]
    if isinstance(node, P.PropTestSetContext):
        path = _path(node.objectPath())
        if node.NOT() or path not in _PATHS:
            return [[_cmp(path, "NOT IN" if node.NOT() else "IN", None)]]
        return [[_cmp(path, "=", _string(lit))] for lit in node.setLiteral().primitiveLiteral()]
    # Any other comparison only narrows: it is kept as a qualifier (or is all there is: unsupported).
    return [[_cmp(_path(node.objectPath()), _OPS.get(type(node), "?"), None)]]


def _reduce(conj: list[_Cmp]) -> list[tuple[str | None, str]]:
    """The IoC values of one conjunction, or UnsupportedPattern saying why there are none."""
    prims = [c for c in conj if c.op == "=" and c.path in _PATHS and c.value is not None]
    others = [c for c in conj if c not in prims]
    if not prims:
        raise UnsupportedPattern("no IoC value ctd holds (" + ", ".join(c.text for c in others[:3]) + ")")
    obj = prims[0].path[0]
    if len({c.path for c in prims}) < len(prims) or any(c.path[0] != obj for c in prims):
        raise UnsupportedPattern("AND of several values (" + ", ".join(c.text for c in prims[:3]) + ")")
    if len(prims) > 1 and not all(c.path[:2] == ("file", "hashes") for c in prims):
        raise UnsupportedPattern("AND of several values (" + ", ".join(c.text for c in prims[:3]) + ")")
    for q in others:
        if q.path[0] != obj and not (q.path[0] == "network-traffic" and q.path[1] in _TRAFFIC_DETAILS):
            raise UnsupportedPattern(f"{q.text} is a comparison on another object than {obj}")
    out: list[tuple[str | None, str]] = []
    for c in prims:
        kind = _PATHS[c.path]
        if c.path[-1] == "value" and c.path[-2].endswith("_ref"):  # typed by its *_ref.type, if given
            ref_type = next((q.value for q in others if q.path == (*c.path[:-1], "type") and q.op == "="), None)
            if ref_type is not None:
                if ref_type not in _REF_TYPES:
                    raise UnsupportedPattern(f"{_show(c.path[:-1])} of type {ref_type[:40]!r}")
                kind = _REF_TYPES[ref_type]
        assert c.value is not None
        out.append((kind, c.value))
    return out


def _observations(node, out: list[list[_Cmp]], skipped: list[str]) -> None:
    """Collect the conjunctions of an OR of observations; what is not one goes to ``skipped``."""
    if isinstance(node, (P.PatternContext,)):
        return _observations(node.observationExpressions(), out, skipped)
    if isinstance(node, P.ObservationExpressionsContext):
        if node.FOLLOWEDBY() is not None:
            skipped.append("FOLLOWEDBY (a sequence of observations)")
            return None
        return _observations(node.observationExpressionOr(), out, skipped)
    if isinstance(node, P.ObservationExpressionOrContext):
        if node.OR() is not None:
            for sub in node.observationExpressionOr():
                _observations(sub, out, skipped)
            return None
        return _observations(node.observationExpressionAnd(), out, skipped)
    if isinstance(node, P.ObservationExpressionAndContext):
        if node.AND() is not None:
            skipped.append("AND of observations (they must all be seen)")
            return None
        return _observations(node.observationExpression(), out, skipped)
    if isinstance(node, P.ObservationExpressionCompoundContext):
        return _observations(node.observationExpressions(), out, skipped)
    if isinstance(node, P.ObservationExpressionSimpleContext):
        try:
            out.extend(_dnf(node.comparisonExpression()))
        except UnsupportedPattern as exc:
            skipped.append(str(exc))
        return None
    # Repeated, within, start/stop: the observation is qualified in time.
    skipped.append("qualified observation (REPEATS/WITHIN/START-STOP)")
    return None


def reduce_pattern(pattern: str) -> Reduced:
    """The IoC values a pattern lists, in order, and the reasons parts of it were skipped.

    ``ipv4``/``ipv6`` values holding a prefix are returned as ``cidr4``/``cidr6``
    (a host prefix, /32 or /128, stays an address). Values are not validated here.
    """
    conjunctions: list[list[_Cmp]] = []
    skipped: list[str] = []
    try:
        Pattern(pattern).visit(_Walker(conjunctions, skipped))
    except ParseException as exc:
        raise MalformedPattern(str(exc)) from exc
    except RecursionError:  # ANTLR and the walk recurse once per nesting level
        raise MalformedPattern("pattern is nested too deeply to parse") from None
    terms: list[tuple[str | None, str]] = []
    for conj in conjunctions:
        try:
            terms += _reduce(conj)
        except UnsupportedPattern as exc:
            skipped.append(str(exc))
    result: list[tuple[str | None, str]] = []
    for kind, value in terms:
        if kind in ("ipv4", "ipv6", None) and "/" in value:
            addr, _, prefix = value.partition("/")
            v6 = kind == "ipv6" or (kind is None and ":" in addr)
            if prefix.strip() == ("128" if v6 else "32"):
                value = addr
            elif kind is not None:
                kind = "cidr6" if v6 else "cidr4"
        if (kind, value) not in result:
            result.append((kind, value))
    return Reduced(result, list(dict.fromkeys(skipped)))


class _Walker:
    """A minimal visitor: ``Pattern.visit`` calls ``visit(tree)`` with the parse tree's root."""

    def __init__(self, out: list[list[_Cmp]], skipped: list[str]) -> None:
        self.out, self.skipped = out, skipped

    def visit(self, tree) -> None:
        _observations(tree, self.out, self.skipped)


def parse_pattern(pattern: str) -> list[tuple[str | None, str]]:
    """The values of a pattern that lists values and nothing else (UnsupportedPattern for any skipped part)."""
    reduced = reduce_pattern(pattern)
    if reduced.skipped:
        raise UnsupportedPattern("; ".join(reduced.skipped))
    return reduced.terms


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build_pattern(type_: str, value: str) -> str:
    """The STIX pattern for one canonical ctd value."""
    path = _WRITE.get(type_)
    if path is None:
        raise UnsupportedPattern(f"no STIX pattern for type {type_!r}")
    return f"[{path} = {_quote(value)}]"


def indicator_id(pattern: str) -> str:
    """Deterministic id: every version ctd publishes of one IoC is one STIX object."""
    return f"indicator--{uuid.uuid5(CTD_NAMESPACE, pattern)}"
