"""Business rules: compile a parsed filter to SQL over ``indicator i``.

The SQL is what selects IoCs for sharing; a plain Python evaluator of the same
AST (``tests/rule_oracle.py``) is the oracle a property test checks it against.
SQL is native wherever SQLite's semantics match exactly: ``=``, ``IN``,
ordering, ``GLOB`` (with ``[`` and ``]`` turned into one-character classes so
they are literal), ``instr`` as a cheap pre-check before ``json_each`` for tags,
and a sighting primary-key probe for sources. Only CIDR containment calls back
into Python (``ctd_cidr_match``), and only for ip/cidr rows of the right family.

Every atom is two-valued: ``coalesce(<atom>, 0)``, so a NULL time (expires_at =
never) makes a comparison false and its negation true (two-valued, as the language says).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from ipaddress import ip_network
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

from ctd.rules.parser import And, Cmp, Node, Not, Now, Or, RuleError, parse

__all__ = ["CompiledRule", "Rule", "RuleError", "SQL_FUNCTIONS", "compile_filter"]


# --- globs and networks -----------------------------------------------------------


def glob_to_sql(pattern: str) -> str:
    """Our glob (``*``, ``?``, all else literal) as a SQLite GLOB pattern."""
    return "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in pattern)


@lru_cache(maxsize=1024)
def _network(pattern: str) -> tuple[int, int, int] | None:
    """``(bits, prefixlen, network int)`` if the pattern is a CIDR, else None."""
    if "/" not in pattern or "*" in pattern or "?" in pattern:
        return None
    try:
        net = ip_network(pattern.strip(), strict=False)
    except ValueError:
        return None
    return net.max_prefixlen, net.prefixlen, int(net.network_address)


def _addr(text: str, bits: int) -> int | None:
    try:
        return int.from_bytes(inet_pton(AF_INET if bits == 32 else AF_INET6, text), "big")
    except (OSError, ValueError):
        return None


def _in_network(net: tuple[int, int, int], value: str) -> bool:
    """Whether an address, or a network ``addr/len``, lies inside ``net``."""
    bits, plen, base = net
    text, slash, length = value.partition("/")
    if "%" in text:
        return False
    vlen = bits
    if slash:
        if not (length.isascii() and length.isdigit()) or int(length) > bits:
            return False
        vlen = int(length)
    addr = _addr(text, bits)
    if addr is None or vlen < plen:
        return False
    shift = bits - plen
    return addr >> shift == base >> shift


_NET_TYPES = {32: ("ipv4", "cidr4"), 128: ("ipv6", "cidr6")}


def _cidr_match(pattern: str | None, value: str | None) -> int | None:
    """SQL ``ctd_cidr_match(pattern, value)``: value (address or cidr) inside pattern."""
    if not isinstance(pattern, str) or not isinstance(value, str):
        return None
    net = _network(pattern)
    return 1 if net is not None and _in_network(net, value) else 0


# The helper functions compiled rule SQL calls: name -> (number of arguments, function).
# The store registers them on its connection (only ctd/store/ touches SQLite).
SQL_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {"ctd_cidr_match": (2, _cidr_match)}


# --- SQL ----------------------------------------------------------------------------

_COLUMNS = {
    f: f"i.{f}"
    for f in (
        "type",
        "value",
        "comments",
        "severity",
        "reputation",
        "hits",
        "first_seen",
        "last_seen",
        "expires_at",
        "warninglist",
    )
}
# A tag is found with instr() first when its JSON spelling is certainly the raw text.
_PLAIN_TAG = re.compile(r"[ !#-.0-\[\]-~]*")
_LIVE_SOURCE = (
    "EXISTS (SELECT 1 FROM sighting s WHERE s.iid = i.id AND s.retracted = 0 AND s.sid IN "
    "(SELECT src.id FROM source src WHERE src.name {}))"
)
Param = object  # a constant, or a Now resolved when sql(now) is called


def _resolve(v: object, now: int) -> object:
    return now + v.offset if isinstance(v, Now) else v


def _sql(node: Node, out: list[str], params: list[Param]) -> None:
    if isinstance(node, (And, Or)):
        sep = " AND " if isinstance(node, And) else " OR "
        out.append("(")
        for k, child in enumerate(node.nodes):
            if k:
                out.append(sep)
            _sql(child, out, params)
        out.append(")")
    elif isinstance(node, Not):
        out.append("NOT (")
        _sql(node.node, out, params)
        out.append(")")
    elif node.op in ("!=", "not in"):
        _sql(Not(Cmp(node.field, "=" if node.op == "!=" else "in", node.args, node.column)), out, params)
    else:
        out.append(_atom(node, params))


def _atom(node: Cmp, params: list[Param]) -> str:
    field, op, args = node.field, node.op, node.args
    marks = ", ".join("?" * len(args))
    if field == "tags":  # has
        tag = str(args[0])
        exact = "EXISTS (SELECT 1 FROM json_each(i.tags) WHERE json_each.value = ?)"
        if _PLAIN_TAG.fullmatch(tag):
            params.extend((f'"{tag}"', tag))
            return f"(instr(i.tags, ?) > 0 AND {exact})"
        params.append(tag)
        return exact
    if field == "value" and op == "~" and (net := _network(str(args[0]))) is not None:
        params.extend((*_NET_TYPES[net[0]], str(args[0])))
        return "(i.type IN (?, ?) AND coalesce(ctd_cidr_match(?, i.value), 0))"
    if op == "~":
        args = (glob_to_sql(str(args[0])),)
        cond = "GLOB ?"
    elif op == "in":
        cond = f"IN ({marks})"
    else:
        cond = f"{op} ?"
    params.extend(args)
    if field == "source":
        return _LIVE_SOURCE.format(cond)
    return f"coalesce({_COLUMNS[field]} {cond}, 0)"


# --- public API -----------------------------------------------------------------------


class CompiledRule:
    """One filter, ready to run as SQL over ``indicator i`` (``node`` is its checked AST)."""

    __slots__ = ("text", "node", "_sql", "_params", "_dynamic", "fields")

    def __init__(self, text: str, node: Node) -> None:
        self.text = text
        self.node = node
        out: list[str] = []
        params: list[Param] = []
        _sql(node, out, params)
        self._sql = "".join(out)
        self._params = params
        self._dynamic = any(isinstance(p, Now) for p in params)
        self.fields = frozenset(_fields(node))  # the indicator fields it reads

    @property
    def uses_now(self) -> bool:
        """Its selection moves with the clock (a time relative to ``now``)."""
        return self._dynamic

    def sql(self, now: int) -> tuple[str, list]:
        """A WHERE fragment over ``indicator i`` with ``?`` placeholders, and its params."""
        if not self._dynamic:
            return self._sql, list(self._params)
        return self._sql, [_resolve(p, now) for p in self._params]

    def __repr__(self) -> str:
        return f"CompiledRule({self.text!r})"


def _fields(node: Node) -> Iterator[str]:
    if isinstance(node, (And, Or)):
        for child in node.nodes:
            yield from _fields(child)
    elif isinstance(node, Not):
        yield from _fields(node.node)
    else:
        yield node.field


def compile_filter(text: str) -> CompiledRule:
    """Parse, check and compile a filter; raise RuleError on any mistake."""
    return CompiledRule(text, parse(text))


class Rule:
    """A filter plus exceptions: matches what the filter selects and no exception does."""

    __slots__ = ("filter", "exceptions")

    def __init__(self, filter: str, exceptions: Sequence[str] = ()) -> None:
        self.filter = compile_filter(filter)
        compiled = []
        for k, text in enumerate(exceptions):
            try:
                compiled.append(compile_filter(text))
            except RuleError as e:
                raise RuleError(e.message, e.column, exception=k) from None
        self.exceptions: tuple[CompiledRule, ...] = tuple(compiled)

    def sql(self, now: int) -> tuple[str, list]:
        """``filter AND NOT (exception) AND ...`` as a WHERE fragment and its params."""
        text, params = self.filter.sql(now)
        parts = [f"({text})"]
        for exc in self.exceptions:
            t, p = exc.sql(now)
            parts.append(f"NOT ({t})")
            params.extend(p)
        return " AND ".join(parts), params

    @property
    def uses_now(self) -> bool:
        """What it selects changes with the clock alone (a time relative to ``now``)."""
        return self.filter.uses_now or any(e.uses_now for e in self.exceptions)

    @property
    def names_sources(self) -> bool:
        """It tests the ``source`` field: what it selects depends on sources other than a sharing's own."""
        return any("source" in c.fields for c in (self.filter, *self.exceptions))

    def __repr__(self) -> str:
        return f"Rule({self.filter.text!r}, {[e.text for e in self.exceptions]!r})"
