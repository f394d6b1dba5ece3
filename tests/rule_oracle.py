"""The rule language evaluated in plain Python: the oracle the compiled SQL is checked against.

The daemon only runs the SQL (``ctd.rules.compiler``); this evaluator walks the
same checked AST one indicator at a time, written for obviousness rather than
speed, so that a property test can compare the two on random rules and data.
CIDR containment reuses the compiler's primitive (the one SQL calls back into).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import msgspec

from ctd.model import SEVERITY_RANK
from ctd.rules.compiler import _NET_TYPES, CompiledRule, Rule, _in_network, _network
from ctd.rules.parser import And, Cmp, Node, Not, Now, Or


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """What the oracle sees of one indicator."""

    type: str
    value: str
    sources: tuple[str, ...]  # names of live (unretracted) sources
    severity: str
    reputation: int
    tags: tuple[str, ...]
    comments: str
    first_seen: int | None
    last_seen: int | None
    expires_at: int | None
    hits: int
    warninglist: str = ""  # the warning list that flagged it ("" if none)


@lru_cache(maxsize=1024)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Our glob (``*`` any run, ``?`` one character, all else literal) as a regex."""
    out = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(out), re.DOTALL)


def matches(rule: Rule | CompiledRule, s: Subject, now: int) -> bool:
    """Does ``rule`` (a filter with its exceptions, or one compiled filter) select ``s`` at ``now``?"""
    if isinstance(rule, CompiledRule):
        return evaluate(rule.node, s, now)
    return evaluate(rule.filter.node, s, now) and not any(evaluate(e.node, s, now) for e in rule.exceptions)


def evaluate(node: Node, s: Subject, now: int) -> bool:
    if isinstance(node, And):
        return all(evaluate(n, s, now) for n in node.nodes)
    if isinstance(node, Or):
        return any(evaluate(n, s, now) for n in node.nodes)
    if isinstance(node, Not):
        return not evaluate(node.node, s, now)
    if node.op == "!=":
        return not evaluate(Cmp(node.field, "=", node.args), s, now)
    if node.op == "not in":
        return not evaluate(Cmp(node.field, "in", node.args), s, now)
    return _compare(node, s, now)


def _compare(node: Cmp, s: Subject, now: int) -> bool:
    field, op = node.field, node.op
    args = [now + a.offset if isinstance(a, Now) else a for a in node.args]
    if field == "tags":  # has
        return args[0] in s.tags
    if op == "~":
        pattern = str(args[0])
        if field == "value" and (net := _network(pattern)) is not None:
            return s.type in _NET_TYPES[net[0]] and _in_network(net, s.value)
        regex = glob_to_regex(pattern)
        texts = s.sources if field == "source" else (getattr(s, field),)
        return any(regex.fullmatch(t) for t in texts)
    if field == "source":  # = or in: any live source
        return any(name in args for name in s.sources)
    x = SEVERITY_RANK.get(s.severity, 0) if field == "severity" else getattr(s, field)
    if op == "in":
        return x in args
    if x is None:  # a missing time: every comparison is false (two-valued)
        return False
    arg: Any = args[0]  # checked against the field by the parser: an int for every ordered field
    match op:
        case "=":
            return bool(x == arg)
        case "<":
            return bool(x < arg)
        case "<=":
            return bool(x <= arg)
        case ">":
            return bool(x > arg)
        case ">=":
            return bool(x >= arg)
    raise AssertionError(f"operator {op!r} reached the oracle")
