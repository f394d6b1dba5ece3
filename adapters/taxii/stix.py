"""STIX 2.1 patterns: read the simple ones into IoCs, write one per IoC.

Reading uses the OASIS reference grammar (``stix2-patterns``, ANTLR) rather
than regexes: quoting, escapes, parentheses and operator precedence are the
grammar's business, and a pattern it rejects is malformed, not "unsupported".
We then walk the parse tree and accept only what an IoC list can express: a
disjunction of equality tests (``=`` or ``IN``) on the object paths below.
Anything that narrows or correlates (AND, FOLLOWEDBY, qualifiers such as
WITHIN/REPEATS/START-STOP, NOT, ordering, LIKE, MATCHES, subnet operators)
would be widened if flattened into a list, so the whole pattern is skipped.
"""

from __future__ import annotations

import uuid

from antlr4.tree.Tree import TerminalNode
from stix2patterns.exceptions import ParseException
from stix2patterns.v21.grammars.STIXPatternParser import STIXPatternParser as P
from stix2patterns.v21.pattern import Pattern

# ctd's namespace for deterministic indicator ids (uuid5(NAMESPACE_URL, "urn:ctd:stix-indicator")).
CTD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ctd:stix-indicator")

# (object type, property path) -> ctd type; the ip ones split into address/cidr by value.
_PATHS: dict[tuple[str, ...], str] = {
    ("url", "value"): "url",
    ("domain-name", "value"): "domain",
    ("ipv4-addr", "value"): "ipv4",
    ("ipv6-addr", "value"): "ipv6",
    ("email-addr", "value"): "email",
    ("file", "hashes", "MD5"): "md5",
    ("file", "hashes", "SHA1"): "sha1",
    ("file", "hashes", "SHA256"): "sha256",
}

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
    """The pattern parses but is not a plain list of IoC values."""


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
        if not isinstance(step, P.KeyPathStepContext):
            raise UnsupportedPattern("list index in object path")
        lit = step.StringLiteral()
        parts.append(_unquote(lit.getText()) if lit else step.IdentifierWithoutHyphen().getText())
    if parts[0] == "file" and len(parts) == 3 and parts[1] == "hashes":
        parts[2] = _hash_key(parts[2])
    return tuple(parts)


def _string(lit: P.PrimitiveLiteralContext) -> str:
    orderable = lit.orderableLiteral()
    token = orderable.StringLiteral() if orderable is not None else None
    if token is None:
        raise UnsupportedPattern(f"non-string literal {lit.getText()}")
    return _unquote(token.getText())


def _terms(node, out: list[tuple[str, str]]) -> None:
    """Collect (ctd type, raw value) from a tree that must be an OR of equality tests."""
    if isinstance(node, TerminalNode):
        text = node.getText()
        if text in ("AND", "FOLLOWEDBY"):
            raise UnsupportedPattern(f"{text} is not a list of values")
        return
    if isinstance(
        node,
        (
            P.ObservationExpressionRepeatedContext,
            P.ObservationExpressionWithinContext,
            P.ObservationExpressionStartStopContext,
        ),
    ):
        raise UnsupportedPattern("qualified observation (REPEATS/WITHIN/START-STOP)")
    if isinstance(node, P.PropTestEqualContext):
        if node.NOT() or node.NEQ():
            raise UnsupportedPattern("negated comparison")
        out.append((_kind(_path(node.objectPath())), _string(node.primitiveLiteral())))
        return
    if isinstance(node, P.PropTestSetContext):
        if node.NOT():
            raise UnsupportedPattern("NOT IN")
        kind = _kind(_path(node.objectPath()))
        out.extend((kind, _string(lit)) for lit in node.setLiteral().primitiveLiteral())
        return
    if isinstance(node, P.PropTestContext) and not isinstance(node, P.PropTestParenContext):
        raise UnsupportedPattern(f"{_OPS.get(type(node), 'unsupported')} comparison")
    for i in range(node.getChildCount()):
        _terms(node.getChild(i), out)


def _kind(path: tuple[str, ...]) -> str:
    kind = _PATHS.get(path)
    if kind is None:
        raise UnsupportedPattern(f"object path {path[0]}:{'.'.join(path[1:])}")
    return kind


def parse_pattern(pattern: str) -> list[tuple[str, str]]:
    """The (ctd type, raw value) pairs a pattern lists, in order.

    ``ipv4``/``ipv6`` values holding a prefix are returned as ``cidr4``/``cidr6``
    (a host prefix, /32 or /128, stays an address). Values are not validated here.
    """
    out: list[tuple[str, str]] = []
    try:
        tree = Pattern(pattern)
        tree.visit(_Collector(out))
    except ParseException as exc:
        raise MalformedPattern(str(exc)) from exc
    except RecursionError:  # ANTLR and the visitor recurse once per nesting level
        raise MalformedPattern("pattern is nested too deeply to parse") from None
    result = []
    for kind, value in out:
        if kind in ("ipv4", "ipv6") and "/" in value:
            addr, _, prefix = value.partition("/")
            full = "32" if kind == "ipv4" else "128"
            kind, value = (kind, addr) if prefix.strip() == full else ("cidr4" if kind == "ipv4" else "cidr6", value)
        result.append((kind, value))
    return result


class _Collector:
    """A minimal visitor: Pattern.visit calls ``visit(tree)`` and returns its result."""

    def __init__(self, out: list[tuple[str, str]]) -> None:
        self.out = out

    def visit(self, tree) -> None:
        _terms(tree, self.out)


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
