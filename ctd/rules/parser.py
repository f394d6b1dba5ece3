"""Business-rule filter language: lexer, parser and AST.

Analysts write filters such as::

    type in (url, domain) and severity >= medium and not value ~ "*.corp.example.com"
    type in (md5, sha256) and reputation >= 6 and source in ("misp", "taxii-osint")
        and last_seen > now - 14d

Grammar (keywords, field names and enum names are case-insensitive)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | comparison
    comparison := FIELD OP operand
                | FIELD ("in" | "not" "in") "(" operand ("," operand)* ")"
    OP         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "has"
    operand    := STRING | ["-"] NUMBER | WORD | timeexpr
    timeexpr   := "now" [("-" | "+") DURATION]
    DURATION   := NUMBER ("s" | "m" | "h" | "d" | "w")
    STRING     := '"' ... '"' | "'" ... "'"     (backslash escapes: \\n \\t \\r, else \\c is c)
    NUMBER     := [0-9]+
    WORD       := [A-Za-z_][A-Za-z0-9_]*          (not a keyword)
    FIELD      := type | value | source | severity | reputation | tags | comments
                | first_seen | last_seen | expires_at | hits | warninglist

Fields and what applies to them (``=``/``!=``/``in``/``not in`` everywhere but tags):

    type        enum of ctd.model.INDICATOR_TYPES (WORD or STRING)
    value       string; ``~`` glob, or CIDR containment when the pattern is a network
    source      set of live (unretracted) source names; true if ANY matches; ``~`` glob
    severity    ordered enum unknown < low < medium < high < critical; ordering ops
    reputation  integer; ordering ops
    hits        integer; ordering ops
    tags        set of strings; only ``has``
    comments    string; ``~`` glob
    warninglist string: the MISP warning list that flagged the indicator ("" if
                none; see ctd.guard); ``~`` glob
    first_seen, last_seen, expires_at
                times: ``now [+-] DURATION``, an ISO 8601 STRING or epoch seconds;
                ordering ops; expires_at may be NULL (never expires)

``a != b`` is exactly ``not (a = b)`` and ``a not in (...)`` is ``not (a in (...))``.
Semantics are two-valued: a comparison against a missing (NULL) time is false.
Errors raise :class:`ctd.errors.RuleError` with a 1-based column.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field

from ctd.errors import RuleError
from ctd.model import INDICATOR_TYPES, SEVERITY_RANK, parse_time

__all__ = ["And", "Cmp", "Node", "Not", "Now", "Or", "RuleError", "FIELDS", "parse"]

KEYWORDS = frozenset({"and", "or", "not", "in", "has", "now"})
_EQ = frozenset({"=", "!=", "in", "not in"})
_ORD = frozenset({"<", "<=", ">", ">="})
# field -> (operand kind, operators that apply)
FIELDS: dict[str, tuple[str, frozenset[str]]] = {
    "type": ("type", _EQ),
    "value": ("str", _EQ | {"~"}),
    "source": ("str", _EQ | {"~"}),
    "comments": ("str", _EQ | {"~"}),
    "warninglist": ("str", _EQ | {"~"}),
    "severity": ("severity", _EQ | _ORD),
    "reputation": ("int", _EQ | _ORD),
    "hits": ("int", _EQ | _ORD),
    "first_seen": ("time", _EQ | _ORD),
    "last_seen": ("time", _EQ | _ORD),
    "expires_at": ("time", _EQ | _ORD),
    "tags": ("str", frozenset({"has"})),
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_PUNCT2 = ("!=", "<=", ">=")
_PUNCT1 = "=<>~(),-+"


# --- AST ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """A time relative to evaluation time: ``now + offset`` seconds."""

    offset: int = 0


@dataclass(frozen=True, slots=True)
class Cmp:
    """``field op args``; args are already checked and converted: str for
    type/value/source/comments/tags, int rank for severity, int for numbers,
    int epoch seconds or :class:`Now` for times. ``in`` may have several args.
    Equality ignores ``column``."""

    field: str
    op: str
    args: tuple[str | int | Now, ...]
    column: int = _field(default=0, compare=False)  # 1-based, of the field name


@dataclass(frozen=True, slots=True)
class Not:
    node: Node


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Cmp | Not | And | Or


# --- lexer --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # word, kw, str, num, dur, punct, end
    value: object
    col: int
    text: str


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        col = i + 1
        if c.isspace():
            i += 1
        elif c in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    buf.append(_ESCAPES.get(text[j], text[j]))
                else:
                    buf.append(text[j])
                j += 1
            if j >= n:
                raise RuleError("unterminated string", col)
            toks.append(_Tok("str", "".join(buf), col, text[i : j + 1]))
            i = j + 1
        elif c.isascii() and c.isdigit():
            j = i
            while j < n and (text[j].isascii() and (text[j].isalnum() or text[j] in "_.")):
                j += 1
            word = text[i:j]
            if word.isdigit():
                toks.append(_Tok("num", int(word), col, word))
            elif word[:-1].isdigit() and word[-1].lower() in _UNITS:
                toks.append(_Tok("dur", int(word[:-1]) * _UNITS[word[-1].lower()], col, word))
            else:
                raise RuleError(f"invalid number '{word}' (quote values that are not numbers)", col)
            i = j
        elif c.isascii() and (c.isalpha() or c == "_"):
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            low = word.lower()
            toks.append(_Tok("kw" if low in KEYWORDS else "word", low if low in KEYWORDS else word, col, word))
            i = j
        elif text.startswith(_PUNCT2, i):
            toks.append(_Tok("punct", text[i : i + 2], col, text[i : i + 2]))
            i += 2
        elif c in _PUNCT1:
            toks.append(_Tok("punct", c, col, c))
            i += 1
        else:
            raise RuleError(f"unexpected character '{c}'", col)
    toks.append(_Tok("end", None, n + 1, ""))
    return toks


# --- parser -------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.pos = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.pos + ahead, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def is_(self, kind: str, value: object = None, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == kind and (value is None or tok.value == value)

    @staticmethod
    def unexpected(tok: _Tok, what: str = "") -> RuleError:
        if tok.kind == "end":
            return RuleError(f"unexpected end of filter{what}", tok.col)
        return RuleError(f"unexpected '{tok.text}'{what}", tok.col)

    def parse(self) -> Node:
        if self.is_("end"):
            raise RuleError("empty filter", 1)
        node = self.or_expr()
        if not self.is_("end"):
            raise self.unexpected(self.peek())
        return node

    def or_expr(self) -> Node:
        nodes = [self.and_expr()]
        while self.is_("kw", "or"):
            self.next()
            nodes.append(self.and_expr())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def and_expr(self) -> Node:
        nodes = [self.unary()]
        while self.is_("kw", "and"):
            self.next()
            nodes.append(self.unary())
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def unary(self) -> Node:
        if self.is_("kw", "not"):
            self.next()
            return Not(self.unary())
        if self.is_("punct", "("):
            self.next()
            node = self.or_expr()
            if not self.is_("punct", ")"):
                raise self.unexpected(self.peek(), ", expected ')'")
            self.next()
            return node
        return self.comparison()

    def comparison(self) -> Node:
        tok = self.next()
        if tok.kind != "word":
            raise self.unexpected(tok, ", expected a field")
        field = str(tok.value).lower()
        if field not in FIELDS:
            raise RuleError(f"unknown field '{tok.text}'", tok.col)
        kind, allowed = FIELDS[field]
        optok = self.next()
        if optok.kind == "kw" and optok.value == "not" and self.is_("kw", "in"):
            self.next()
            op, optext = "not in", f"{optok.text} {self.toks[self.pos - 1].text}"
        elif (optok.kind == "kw" and optok.value in ("in", "has")) or (
            optok.kind == "punct" and optok.value in ("=", "!=", "<", "<=", ">", ">=", "~")
        ):
            op, optext = str(optok.value), optok.text
        else:
            raise self.unexpected(optok, f", expected an operator after '{tok.text}'")
        if op not in allowed:
            raise RuleError(f"operator '{op}' does not apply to {field}", optok.col)
        if op in ("in", "not in"):
            if not self.is_("punct", "("):
                raise self.unexpected(self.peek(), f", expected '(' after '{optext}'")
            self.next()
            args = [self.operand(field, kind, "(")]
            while self.is_("punct", ","):
                self.next()
                args.append(self.operand(field, kind, ","))
            if not self.is_("punct", ")"):
                raise self.unexpected(self.peek(), ", expected ',' or ')'")
            self.next()
        else:
            args = [self.operand(field, kind, optext)]
        return Cmp(field, op, tuple(args), tok.col)

    def operand(self, field: str, kind: str, after: str) -> str | int | Now:
        tok = self.next()
        if tok.kind == "kw" and tok.value == "now":
            offset = 0
            if self.is_("punct", "-") or self.is_("punct", "+"):
                sign = -1 if self.next().value == "-" else 1
                dur = self.next()
                if dur.kind != "dur":
                    raise self.unexpected(dur, ", expected a duration such as 14d")
                offset = sign * int(dur.value)  # type: ignore[call-overload]
            if kind != "time":
                raise RuleError(f"a time does not apply to {field}", tok.col)
            return Now(offset)
        if tok.kind == "punct" and tok.value == "-" and self.is_("num"):
            num = self.next()
            tok = _Tok("num", -int(num.value), tok.col, "-" + num.text)  # type: ignore[call-overload]
        if tok.kind not in ("str", "num", "word"):
            raise RuleError(f"expected a value after '{after}'", tok.col)
        return _convert(field, kind, tok)


def _convert(field: str, kind: str, tok: _Tok) -> str | int:
    """Check an operand against its field and convert it to the AST value."""
    if kind == "str":
        if tok.kind == "num":
            raise RuleError(f"{field} expects a string, not a number", tok.col)
        return str(tok.value)
    if kind == "type":
        if tok.kind == "num" or str(tok.value).lower() not in INDICATOR_TYPES:
            raise RuleError(f"unknown indicator type '{tok.value}'", tok.col)
        return str(tok.value).lower()
    if kind == "severity":
        if tok.kind == "num" or str(tok.value).lower() not in SEVERITY_RANK:
            raise RuleError(f"unknown severity '{tok.value}'", tok.col)
        return SEVERITY_RANK[str(tok.value).lower()]
    if kind == "int":
        if tok.kind != "num":
            raise RuleError(f"{field} expects a number, not {tok.text}", tok.col)
        return int(tok.value)  # type: ignore[call-overload]
    # time: epoch seconds or an ISO 8601 string
    if tok.kind == "num":
        return int(tok.value)  # type: ignore[call-overload]
    if tok.kind == "str":
        try:
            return parse_time(str(tok.value))
        except (ValueError, OverflowError):
            pass
    raise RuleError(f'{field} expects a time (now - 14d or "2026-01-31"), not {tok.text}', tok.col)


def parse(text: str) -> Node:
    """Parse and check a filter; raise :class:`RuleError` on any mistake."""
    return _Parser(text).parse()
