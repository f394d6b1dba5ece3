"""Business-rule filters: parsing, errors, the Python oracle's evaluation, compiled SQL == the oracle."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.errors import CtdError
from ctd.model import INDICATOR_TYPES, SEVERITIES, Sighting, iso
from ctd.rules.compiler import SQL_FUNCTIONS, CompiledRule, Rule, compile_filter, glob_to_sql
from ctd.rules.parser import And, Cmp, Node, Not, Now, Or, RuleError, parse
from ctd.store import sql as store_sql
from tests.rule_oracle import Subject, glob_to_regex, matches
from tests.storeutil import DAY, NOW, ingest

MD5 = "0cc175b9c0f1b6a831c399e269772661"
SHA256 = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
EXAMPLES = [
    'type in (url, domain) and severity >= medium and not value ~ "*.corp.example.com"',
    'type in (md5, sha256) and reputation >= 6 and source in ("misp", "taxii-osint") and last_seen > now - 14d',
    'value = "goodurl.com"',
    'tags has "allowlisted"',
    'value ~ "1donotsharethishash23"',
]


def subj(**kw: Any) -> Subject:
    base: dict[str, Any] = dict(
        type="domain",
        value="evil.example.com",
        sources=("misp",),
        severity="medium",
        reputation=5,
        tags=(),
        comments="",
        first_seen=NOW - 10 * DAY,
        last_seen=NOW - DAY,
        expires_at=None,
        hits=1,
    )
    base.update(kw)
    return Subject(**base)


def match(text: str, now: int = NOW, **kw: Any) -> bool:
    return matches(compile_filter(text), subj(**kw), now)


def q(s: str) -> str:
    """A double-quoted filter string literal for s."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- parsing ------------------------------------------------------------------------


class TestParse:
    @pytest.mark.parametrize("text", EXAMPLES)
    def test_examples_parse(self, text):
        """The analyst examples from the design compile."""
        compile_filter(text)

    def test_example_ast(self):
        """The first example parses to the expected tree, severity as its rank."""
        assert parse(EXAMPLES[0]) == And(
            (
                Cmp("type", "in", ("url", "domain"), 1),
                Cmp("severity", ">=", (2,), 27),
                Not(Cmp("value", "~", ("*.corp.example.com",), 54)),
            )
        )

    def test_relative_time(self):
        """`now - 14d` is a Now offset of minus 14 days."""
        assert parse("last_seen > now - 14d") == Cmp("last_seen", ">", (Now(-14 * DAY),), 1)

    def test_and_binds_tighter_than_or(self):
        """`a or b and c` is `a or (b and c)`."""
        a, b, c = (Cmp("hits", "=", (n,)) for n in (1, 2, 3))
        assert parse("hits = 1 or hits = 2 and hits = 3") == Or((a, And((b, c))))

    def test_parentheses_override_precedence(self):
        """Parentheses group `(a or b) and c`."""
        node = parse("(hits = 1 or hits = 2) and hits = 3")
        assert isinstance(node, And) and isinstance(node.nodes[0], Or)

    def test_not_binds_tightest(self):
        """`not a or b` is `(not a) or b`, and `not not a` nests."""
        node = parse("not hits = 1 or hits = 2")
        assert isinstance(node, Or) and isinstance(node.nodes[0], Not)
        assert parse("not not hits = 1") == Not(Not(Cmp("hits", "=", (1,), 9)))

    def test_keywords_case_insensitive(self):
        """AND/Or/NOT/IN/HAS/NOW and enum names are case-insensitive."""
        a = parse('TYPE IN (URL) AND Not tags HAS "x" Or last_seen > NOW - 1D')
        b = parse('type in (url) and not tags has "x" or last_seen > now - 1d')
        assert a == b

    def test_string_escapes_and_quotes(self):
        """Strings take double or single quotes and backslash escapes."""
        assert parse(r'value = "a\"b\\c\n"') == Cmp("value", "=", ('a"b\\c\n',), 1)
        assert parse("value = 'it\\'s'") == Cmp("value", "=", ("it's",), 1)

    def test_iso_and_epoch_times(self):
        """Times accept ISO 8601 dates/datetimes and epoch seconds."""
        assert parse('expires_at < "2026-01-31"').args == (1769817600,)
        assert parse('expires_at < "2026-01-31T10:00:00Z"').args == (1769817600 + 36000,)
        assert parse("expires_at < 1769817600").args == (1769817600,)

    def test_not_in(self):
        """`not in` is one operator and negative numbers are operands."""
        assert parse("reputation not in (-1, 2)") == Cmp("reputation", "not in", (-1, 2), 1)

    @pytest.mark.parametrize(
        ("text", "message", "column"),
        [
            ("severity >= medium and sevrity > low", "unknown field 'sevrity'", 24),
            ("reputation >= 6 and hits >=", "expected a value after '>='", 28),
            ("type in (url, ulr)", "unknown indicator type 'ulr'", 15),
            ("severity = severe", "unknown severity 'severe'", 12),
            ("type = url and reputation ~ 6", "operator '~' does not apply to reputation", 27),
            ('tags = "x"', "operator '=' does not apply to tags", 6),
            ('value has "x"', "operator 'has' does not apply to value", 7),
            ("type > url", "operator '>' does not apply to type", 6),
            ('value = "abc', "unterminated string", 9),
            ("or hits = 1", "unexpected 'or'", 1),
            ("", "empty filter", 1),
            ("   ", "empty filter", 1),
            ("hits = 1 hits = 2", "unexpected 'hits'", 10),
            ("hits = 1)", "unexpected ')'", 9),
            ('reputation = "5"', "reputation expects a number", 14),
            ("value = now - 1d", "a time does not apply to value", 9),
            ('last_seen > "yesterday"', "last_seen expects a time", 13),
            ("last_seen > now - 14", "expected a duration", 19),
            ("hits = 12x", "invalid number '12x'", 8),
            ("value = 3", "value expects a string", 9),
            ("(hits = 1", "expected ')'", 10),
            ("type in url", "expected '(' after 'in'", 9),
            ("type in (url domain)", "expected ',' or ')'", 14),
            ("hits @ 1", "unexpected character '@'", 6),
            ("hits", "expected an operator", 5),
            ("value = and", "expected a value after '='", 9),
        ],
    )
    def test_compile_errors(self, text, message, column):
        """Each mistake is a RuleError naming the problem and its 1-based column."""
        with pytest.raises(RuleError) as info:
            compile_filter(text)
        assert message in info.value.message, info.value.message
        assert info.value.column == column
        assert str(info.value).endswith(f" at column {column}")

    def test_exception_error_says_which(self):
        """An error in an exception names the exception's index."""
        with pytest.raises(RuleError, match=r"^exceptions\[1\]: unknown field 'vaule' at column 1$"):
            Rule("type = url", ['value = "a"', 'vaule = "b"'])

    def test_error_location_is_in_attributes(self):
        """A RuleError carries its location as attributes (column, exception index) and is a CtdError."""
        with pytest.raises(RuleError) as info:
            Rule("type = url", ['value = "a"', 'value = "b" and vaule = "c"'])
        err = info.value
        assert (err.message, err.column, err.exception) == ("unknown field 'vaule'", 17, 1)
        assert isinstance(err, CtdError)
        with pytest.raises(RuleError) as info:
            Rule("type = ulr")
        assert (info.value.column, info.value.exception) == (8, None)


# --- Python evaluation --------------------------------------------------------------


class TestEvaluate:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("type = domain", True),
            ("type != domain", False),
            ("type in (url, domain)", True),
            ("type not in (url, domain)", False),
            ("type = url", False),
        ],
    )
    def test_type(self, text, expected):
        """type supports =, !=, in, not in."""
        assert match(text) is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('value = "evil.example.com"', True),
            ('value = "EVIL.example.com"', False),
            ('value != "evil.example.com"', False),
            ('value in ("x", "evil.example.com")', True),
            ('value not in ("x", "y")', True),
            ("value = evil", False),
        ],
    )
    def test_value_equality(self, text, expected):
        """value compares exactly (case-sensitively)."""
        assert match(text) is expected

    @pytest.mark.parametrize(
        ("pattern", "value", "expected"),
        [
            ("*.example.com", "evil.example.com", True),
            ("*.example.com", "example.com", False),
            ("evil*", "evil.example.com", True),
            ("*", "", True),
            ("?vil.example.com", "evil.example.com", True),
            ("?", "é", True),
            ("??", "é", False),
            ("a[1]", "a[1]", True),
            ("a[1]", "a1", False),
            ("a[]]", "a[]]", True),
            ("a]", "a]", True),
            ("a.c", "abc", False),
            ("*EVIL*", "evil", False),
            ("a*b", "a\nb", True),
        ],
    )
    def test_value_glob(self, pattern, value, expected):
        """`~` is a case-sensitive glob: * any run, ? one character, [ ] literal."""
        assert match(f"value ~ {q(pattern)}", value=value) is expected

    @pytest.mark.parametrize(
        ("pattern", "typ", "value", "expected"),
        [
            ("10.0.0.0/8", "ipv4", "10.1.2.3", True),
            ("10.0.0.0/8", "ipv4", "11.1.2.3", False),
            ("10.0.0.0/8", "cidr4", "10.1.0.0/16", True),
            ("10.0.0.0/8", "cidr4", "10.0.0.0/8", True),
            ("10.0.0.0/8", "cidr4", "0.0.0.0/0", False),
            ("10.1.2.3/8", "ipv4", "10.9.9.9", True),
            ("2001:db8::/32", "ipv6", "2001:db8::1", True),
            ("2001:db8::/32", "ipv6", "2001:db9::1", False),
            ("2001:db8::/32", "cidr6", "2001:db8:1::/48", True),
            ("2001:db8::/32", "cidr6", "2001::/16", False),
            ("10.0.0.0/8", "domain", "10.1.2.3", False),
            ("10.0.0.0/8", "ipv6", "::ffff:10.1.2.3", False),
            ("10.0.0.0/8", "ipv4", "10.1.2", False),
            ("0.0.0.0/0", "ipv4", "8.8.8.8", True),
        ],
    )
    def test_value_cidr(self, pattern, typ, value, expected):
        """A CIDR pattern matches ip values inside it and cidr values contained in it."""
        assert match(f"value ~ {q(pattern)}", type=typ, value=value) is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('source = "misp"', True),
            ('source = "otx"', False),
            ('source != "misp"', False),
            ('source != "otx"', True),
            ('source in ("otx", "taxii-osint")', True),
            ('source not in ("misp", "taxii-osint")', False),
            ('source ~ "taxii*"', True),
            ('source ~ "?isp"', True),
            ('source ~ "x*"', False),
        ],
    )
    def test_source_any_live(self, text, expected):
        """source matches if any live source matches; != and not in negate."""
        assert match(text, sources=("misp", "taxii-osint")) is expected

    def test_source_none_live(self):
        """An indicator no live source reports matches no positive source test."""
        assert not match('source ~ "*"', sources=())
        assert match('source != "misp"', sources=())

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("severity >= medium", True),
            ("severity > medium", False),
            ("severity < high", True),
            ("severity <= low", False),
            ("severity = medium", True),
            ("severity in (low, critical)", False),
            ("severity > unknown", True),
        ],
    )
    def test_severity_ordered(self, text, expected):
        """severity compares by rank unknown < low < medium < high < critical."""
        assert match(text, severity="medium") is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("reputation >= 6", True),
            ("reputation > 6", False),
            ("reputation = 6", True),
            ("reputation != 6", False),
            ("reputation in (1, 6)", True),
            ("hits < 3", True),
            ("hits >= 3", False),
            ("hits not in (1, 2)", False),
        ],
    )
    def test_numbers(self, text, expected):
        """reputation and hits compare as integers."""
        assert match(text, reputation=6, hits=2) is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('tags has "apt"', True),
            ('tags has "APT"', False),
            ('not tags has "apt"', False),
            ('tags has "c2"', False),
            ('not tags has "c2"', True),
        ],
    )
    def test_tags_has(self, text, expected):
        """tags has tests membership; not tags has its absence."""
        assert match(text, tags=("apt", "phish")) is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('comments = "seen in *campaign*"', True),
            ('comments ~ "*campaign*"', True),
            ('comments ~ "*Campaign*"', False),
            ('comments in ("a", "seen in *campaign*")', True),
        ],
    )
    def test_comments(self, text, expected):
        """comments supports equality and glob."""
        assert match(text, comments="seen in *campaign*") is expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("last_seen > now - 14d", True),
            ("last_seen > now - 1d", False),
            ("last_seen >= now - 1d", True),
            ("last_seen > now - 25h", True),
            ("first_seen < now - 1w", True),
            ("first_seen = now - 10d", True),
            ("last_seen < now + 1s", True),
            (f'last_seen = "{iso(NOW - DAY)}"', True),
        ],
    )
    def test_relative_and_absolute_times(self, text, expected):
        """Times compare against now +/- a duration or an ISO 8601 instant."""
        assert match(text) is expected

    def test_relative_time_moves_with_now(self):
        """`now - 14d` is evaluated at the given now."""
        rule = compile_filter("last_seen > now - 14d")
        assert matches(rule, subj(last_seen=NOW - 10 * DAY), NOW)
        assert not matches(rule, subj(last_seen=NOW - 10 * DAY), NOW + 5 * DAY)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("expires_at < now + 30d", False),
            ("expires_at > now", False),
            ("expires_at = now", False),
            ("not expires_at < now + 30d", True),
            ("expires_at != now", True),
            ("expires_at not in (now)", True),
            ("first_seen < now", False),
            ("not first_seen < now", True),
        ],
    )
    def test_null_time_two_valued(self, text, expected):
        """A comparison with a NULL time is false and its negation true."""
        assert match(text, expires_at=None, first_seen=None) is expected


class TestSeedExamples:
    GOOD = "https://goodurl.com/login"

    def test_share_every_url_except_goodurl(self):
        """An exception drops goodurl.com though several sources report it."""
        rule = Rule("type = url", ['value ~ "*://goodurl.com*"'])
        many = subj(type="url", value=self.GOOD, sources=("misp", "taxii-osint", "crowdstrike"))
        assert not matches(rule, many, NOW)
        assert matches(rule, subj(type="url", value="https://evil.example.com/", sources=("misp",)), NOW)
        assert matches(rule.filter, many, NOW)

    def test_share_hashes_except_one(self):
        """MD5 and SHA256 are shared except the one excepted hash."""
        rule = Rule("type in (md5, sha256)", [f'value = "{MD5}"'])
        assert not matches(rule, subj(type="md5", value=MD5), NOW)
        assert matches(rule, subj(type="sha256", value=SHA256), NOW)
        assert not matches(rule, subj(type="sha1", value="a" * 40), NOW)


# --- SQL ------------------------------------------------------------------------------


def subjects(conn: sqlite3.Connection) -> dict[int, Subject]:
    """Every indicator as the oracle sees it, read back from the store."""
    live: dict[int, list[str]] = defaultdict(list)
    for iid, name in conn.execute(
        "SELECT s.iid, src.name FROM sighting s JOIN source src ON src.id = s.sid WHERE s.retracted = 0"
    ):
        live[iid].append(name)
    out = {}
    for row in conn.execute(
        "SELECT id, type, value, severity, reputation, tags, comments, first_seen, last_seen, expires_at, hits, "
        "warninglist FROM indicator"
    ):
        iid, typ, value, sev, rep, tags, comments, first, last, exp, hits, wl = row
        out[iid] = Subject(
            type=typ,
            value=value,
            sources=tuple(live[iid]),
            severity=SEVERITIES[sev],
            reputation=rep,
            tags=tuple(json.loads(tags)),
            comments=comments,
            first_seen=first,
            last_seen=last,
            expires_at=exp,
            hits=hits,
            warninglist=wl,
        )
    return out


def select(conn: sqlite3.Connection, rule: Rule, now: int = NOW) -> set[int]:
    sql, params = rule.sql(now)
    return {r[0] for r in conn.execute(f"SELECT i.id FROM indicator i WHERE {sql}", params)}


def assert_sql_equals_python(conn, rule, subs, now=NOW) -> set[int]:
    got = select(conn, rule, now)
    assert got == {iid for iid, sub in subs.items() if matches(rule, sub, now)}, rule
    return got


def open_db(path: str) -> sqlite3.Connection:
    conn = store_sql.connect(path)
    for name, (nargs, fn) in SQL_FUNCTIONS.items():
        conn.create_function(name, nargs, fn, deterministic=True)
    return conn


def sighting(typ: str, value: str, **kw: Any) -> Sighting:
    return Sighting(type=typ, value=value, **kw)


# What each source's warning-list guard flags, by (type, value): the lists' names, "" never.
FLAGGED: dict[str, dict[tuple[str, str], str]] = {
    "misp": {},
    "misp-2": {("domain", "evil.example.com"): "tranco10k", ("ipv4", "10.1.2.3"): "rfc1918"},
    "taxii-osint": {("url", "https://goodurl.com/login"): "tranco10k", ("sha256", SHA256): "nioc-filehash"},
    "crowdstrike": {("url", "https://goodurl.com/login"): "alexa", ("ipv4", "10.1.2.3"): "rfc1918"},
}


def _flags(src: str):
    table = FLAGGED[src]
    return lambda t, v: table.get((t, v))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    conn = open_db(str(tmp_path_factory.mktemp("rules") / "ctd.db"))
    ingest(
        conn,
        "misp",
        [
            sighting("url", "https://goodurl.com/login", severity="high", reputation=8, tags=("phish",)),
            sighting("url", "https://evil.example.com/a[1]", severity="medium", reputation=6, last_seen=NOW - 20 * DAY),
            sighting("domain", "x.corp.example.com", severity="critical", reputation=9, tags=("apt", "c2")),
            sighting("md5", MD5, severity="low", reputation=7, last_seen=NOW - 3 * DAY, comments="dropper"),
            sighting("ipv4", "10.1.2.3", severity="high", tags=("allowlisted",)),
            sighting("cidr6", "2001:db8:1::/48", severity="unknown", reputation=2),
        ],
        aging_days=0,
    )
    ingest(
        conn,
        "taxii-osint",
        [
            sighting("url", "https://goodurl.com/login", reputation=4),
            sighting("sha256", SHA256, severity="critical", reputation=10, tags=('q"x', "é")),
            sighting("domain", "x.corp.example.com", retracted=True),
            sighting("ipv6", "2001:db8::5", expires_at=NOW + 5 * DAY),
        ],
        warninglisted=_flags("taxii-osint"),
    )
    ingest(
        conn,
        "crowdstrike",
        [
            sighting("url", "https://goodurl.com/login", severity="low"),
            sighting("md5", MD5, retracted=True),
            sighting("cidr4", "10.0.0.0/8", severity="medium", reputation=6, last_seen=NOW - 40 * DAY),
        ],
        aging_days=30,
        warninglisted=_flags("crowdstrike"),
        warninglist_tag=True,
    )
    yield conn, subjects(conn)
    conn.close()


SQL_FILTERS = EXAMPLES + [
    "type = url",
    "type != url",
    "type not in (md5, sha256)",
    'value ~ "*[1]"',
    'value ~ "10.0.0.0/8"',
    'value ~ "2001:db8::/32"',
    'source = "taxii-osint"',
    'source != "misp"',
    'source ~ "*osint"',
    'source not in ("crowdstrike")',
    "severity >= high",
    "severity in (unknown, low)",
    "reputation < 6",
    "hits >= 2",
    'tags has "apt"',
    'not tags has "phish"',
    "tags has 'q\\\"x'",
    'tags has "é"',
    'comments ~ "drop*"',
    'comments = ""',
    "last_seen > now - 14d",
    "first_seen <= now - 20d",
    "expires_at > now",
    "not expires_at > now",
    "expires_at != now + 5d",
    'expires_at < "2030-01-01"',
    "(type = url or type = md5) and not (source = crowdstrike and severity < medium)",
    'warninglist = "tranco10k"',
    'warninglist != ""',
    'warninglist in ("alexa", "nioc-filehash")',
    'warninglist ~ "tranco*"',
    'not warninglist ~ "?*"',
    'tags has "warninglist:alexa"',
]


class TestSql:
    @pytest.mark.parametrize("text", SQL_FILTERS)
    def test_sql_selects_what_python_accepts(self, db, text):
        """The SQL fragment selects exactly the indicators the Python evaluator accepts."""
        conn, subs = db
        assert_sql_equals_python(conn, Rule(text), subs)

    def test_retracted_source_does_not_count(self, db):
        """A source that retracted an indicator no longer matches `source =`."""
        conn, subs = db
        got = assert_sql_equals_python(conn, Rule('source = "crowdstrike"'), subs)
        assert {subs[i].type for i in got} == {"url", "cidr4"}

    def test_exceptions_in_sql(self, db):
        """Rule SQL is the filter AND NOT each exception."""
        conn, subs = db
        rule = Rule("type in (url, md5, sha256)", ['value ~ "*goodurl.com*"', f'value = "{MD5}"'])
        got = assert_sql_equals_python(conn, rule, subs)
        assert {subs[i].value for i in got} == {"https://evil.example.com/a[1]", SHA256}

    def test_warninglist_field(self, db):
        """`warninglist` names the list a source's guard flagged (first by name across sources); "" if none."""
        conn, subs = db
        got = assert_sql_equals_python(conn, Rule('warninglist != ""'), subs)
        assert sorted((subs[i].value, subs[i].warninglist) for i in got) == [
            (SHA256, "nioc-filehash"),
            ("https://goodurl.com/login", "alexa"),
        ]

    def test_now_is_a_parameter(self):
        """sql(now) binds now as a parameter: the SQL text does not change with now."""
        rule = compile_filter("last_seen > now - 14d")
        (t1, p1), (t2, p2) = rule.sql(NOW), rule.sql(NOW + 60)
        assert t1 == t2 and p1 == [NOW - 14 * DAY] and p2 == [NOW + 60 - 14 * DAY]

    @pytest.mark.parametrize(
        "field_op", ["value =", "comments ~", "source =", "tags has", "value ~", "type in (url) or value in"]
    )
    def test_values_are_parameters(self, db, field_op):
        """A hostile value reaches SQL only as a parameter and selects nothing extra."""
        conn, subs = db
        evil = "x' OR 1=1 --"
        text = f'{field_op} ("{evil}")' if field_op.endswith(" in") else f'{field_op} "{evil}"'
        rule = Rule(text)
        sql, params = rule.sql(NOW)
        assert "1=1" not in sql and "'" not in sql and any(evil in str(p) for p in params)
        got = assert_sql_equals_python(conn, rule, subs)
        assert got == ({i for i, s in subs.items() if s.type == "url"} if "type" in field_op else set())


# --- property: SQL == Python ----------------------------------------------------------

SOURCES = ("misp", "misp-2", "taxii-osint", "crowdstrike")
TAGS = ("apt", "phish", "a[1]", 'q"x', "é", "a/b")
TEXT = st.text(alphabet="ab[]*?.é \\\"'", max_size=5)
COMMENTS = st.sampled_from(("", "a[b]", "[", "]", "a*b", "ab", "é?", "x [1] y")) | TEXT
VALUES = (
    ("domain", "evil.example.com"),
    ("domain", "a.corp.example.com"),
    ("domain", "goodurl.com"),
    ("hostname", "evil.example.com"),
    ("url", "http://goodurl.com/x[1]?a=*"),
    ("url", "https://evil.example.com/"),
    ("ipv4", "10.1.2.3"),
    ("ipv4", "192.168.1.7"),
    ("ipv4", "10.1.2"),
    ("ipv6", "2001:db8::1"),
    ("ipv6", "2001:db9::1"),
    ("ipv6", "::ffff:10.1.2.3"),
    ("cidr4", "10.1.0.0/16"),
    ("cidr4", "10.0.0.0/8"),
    ("cidr4", "0.0.0.0/0"),
    ("cidr6", "2001:db8::/48"),
    ("cidr6", "2001:db8::/32"),
    ("md5", MD5),
    ("sha256", SHA256),
    ("email", "bob@evil.example.com"),
    ("url", "http://evil.example.com/]a[b]"),
)
GLOBS = (
    "*.example.com",
    "*evil*",
    "10.*",
    "?0.1.2.3",
    "*[1]*",
    "http*://*",
    "*",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "2001:db8::/32",
    "2001:db8::/64",
    "::/0",
    "0.0.0.0/0",
    "192.168.1.0/24",
    "::ffff:0:0/96",
)


def sub_glob(strings: tuple[str, ...] | st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Glob patterns cut from real strings: a slice, optionally with * around and one ? inside."""
    base = strings if isinstance(strings, st.SearchStrategy) else st.sampled_from(strings)
    return st.builds(
        lambda v, i, n, pre, post, k: (
            ("*" if pre else "")
            + (v[i : i + n][:k] + "?" + v[i : i + n][k + 1 :] if 0 <= k < len(v[i : i + n]) else v[i : i + n])
            + ("*" if post else "")
        ),
        base,
        st.integers(0, 20),
        st.integers(0, 12),
        st.booleans(),
        st.booleans(),
        st.integers(-3, 5),
    )


TIMES = st.one_of(
    st.just("now"),
    st.builds(lambda s, n, u: f"now {s} {n}{u}", st.sampled_from("-+"), st.integers(0, 70), st.sampled_from("dh")),
    st.integers(-70, 70).map(lambda d: q(str(iso(NOW + d * DAY)))),
    st.integers(-70, 70).map(lambda d: str(NOW + d * DAY)),
)


def eq_in(field: str, operand: st.SearchStrategy[str], extra: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    ops = st.sampled_from(("=", "!=") + extra)
    return st.one_of(
        st.builds(lambda op, v: f"{field} {op} {v}", ops, operand),
        st.builds(
            lambda op, vs: f"{field} {op} ({', '.join(vs)})",
            st.sampled_from(("in", "not in", "IN", "NOT in")),
            st.lists(operand, min_size=1, max_size=3),
        ),
    )


ORD = ("<", "<=", ">", ">=")
ATOMS = st.one_of(  # the comparisons where SQL and Python differ most come first
    st.builds(lambda p: f"value ~ {q(p)}", st.sampled_from(GLOBS) | sub_glob(tuple(v for _, v in VALUES)) | TEXT),
    st.builds(lambda p: f"comments ~ {q(p)}", sub_glob(COMMENTS) | TEXT),
    st.builds(lambda t: f"tags has {q(t)}", st.sampled_from(TAGS + ("zz",))),
    eq_in("source", st.sampled_from([q(s) for s in SOURCES + ("nope",)])),
    st.builds(lambda p: f"source ~ {q(p)}", st.sampled_from(("misp*", "*osint", "?isp", "*", "misp-?"))),
    *(eq_in(f, TIMES, ORD) for f in ("expires_at", "first_seen", "last_seen")),
    eq_in("type", st.sampled_from(INDICATOR_TYPES)),
    eq_in("value", st.sampled_from([q(v) for _, v in VALUES])),
    eq_in("severity", st.sampled_from(SEVERITIES), ORD),
    eq_in("reputation", st.integers(-1, 11).map(str), ORD),
    eq_in("hits", st.integers(0, 4).map(str), ORD),
    eq_in("comments", COMMENTS.map(q)),
    eq_in("warninglist", st.sampled_from([q(n) for n in ("", "tranco10k", "rfc1918", "alexa", "nope")])),
    st.builds(lambda p: f"warninglist ~ {q(p)}", st.sampled_from(("*", "?*", "tranco*", "*1*", "rfc????"))),
    st.builds(lambda t: f"tags has {q(t)}", st.sampled_from(("warninglist:alexa", "warninglist:rfc1918"))),
)
FILTERS = st.recursive(
    ATOMS,
    lambda c: st.one_of(
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", c, st.sampled_from(("and", "or", "AND", "Or")), c),
        st.builds(lambda a, op, b: f"{a} {op} {b}", c, st.sampled_from(("and", "or")), c),
        c.map(lambda x: f"not ({x})"),
    ),
    max_leaves=6,
)
SIGHTINGS = st.builds(
    lambda tv, src, sev, rep, tags, comments, last, first, exp, retracted: (
        src,
        Sighting(
            type=tv[0],
            value=tv[1],
            severity=sev,
            reputation=rep,
            tags=tags,
            comments=comments,
            last_seen=NOW + last * DAY,
            first_seen=None if first is None else NOW + (last - first) * DAY,
            expires_at=None if exp is None else NOW + exp * DAY,
            retracted=retracted,
        ),
    ),
    st.sampled_from(VALUES),
    st.sampled_from(SOURCES),
    st.sampled_from(SEVERITIES),
    st.none() | st.integers(1, 10),
    st.lists(st.sampled_from(TAGS), max_size=3, unique=True).map(tuple),
    COMMENTS,
    st.integers(-60, 5),
    st.none() | st.integers(0, 20),
    st.none() | st.integers(-10, 30),
    st.booleans(),
)


def comparisons(node: Node) -> list[Cmp]:
    if isinstance(node, Cmp):
        return [node]
    if isinstance(node, Not):
        return comparisons(node.node)
    return [c for n in node.nodes for c in comparisons(n)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reports=st.lists(SIGHTINGS, min_size=3, max_size=25),
    aging=st.sampled_from((0, 30)),
    rules=st.lists(st.tuples(FILTERS, st.lists(FILTERS, max_size=2)), min_size=1, max_size=4),
    atoms=st.lists(ATOMS, min_size=5, max_size=30),
)
def test_property_sql_equals_python(reports, aging, rules, atoms):
    """For random indicators and random rules, SQL selects exactly what Python accepts."""
    conn = open_db(":memory:")
    try:
        by_source: dict[str, dict[tuple[str, str], Sighting]] = defaultdict(dict)
        for src, sig in reports:
            by_source[src][(sig.type, sig.value)] = sig
        for src, sigs in by_source.items():
            # crowdstrike's guard tags its hits; the others hold them
            ingest(
                conn,
                src,
                list(sigs.values()),
                aging_days=aging,
                warninglisted=_flags(src),
                warninglist_tag=src == "crowdstrike",
            )
        subs = subjects(conn)
        flagged: dict[tuple[str, str], set[str]] = defaultdict(set)
        for src, sigs in by_source.items():
            for key in sigs:
                if name := FLAGGED[src].get(key):
                    flagged[key].add(name)
        # the indicator's warninglist is the first by name of its sources' hits (the oracle's own derivation)
        assert {(s.type, s.value): s.warninglist for s in subs.values()} == {
            key: min(flagged[key]) if flagged[key] else "" for sigs in by_source.values() for key in sigs
        }
        for text in atoms:
            assert_sql_equals_python(conn, Rule(text), subs)
        for text, exceptions in rules:
            rule = Rule(text, exceptions)
            assert_sql_equals_python(conn, rule, subs)
            for part in (rule.filter, *rule.exceptions):  # each comparison alone, too
                for atom in comparisons(part.node):
                    assert_sql_equals_python(conn, CompiledRule(part.text, atom), subs)
    finally:
        conn.close()


TAG_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=4)
GLOB_CHARS = "ab[]*?^!-.é\\"


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(alphabet=GLOB_CHARS, max_size=6), value=st.text(alphabet=GLOB_CHARS, max_size=6))
def test_property_glob_translation(pattern, value):
    """SQLite GLOB on the translated pattern agrees with the Python glob, [ ] ^ - included."""
    conn = sqlite3.connect(":memory:")
    try:
        sql = conn.execute("SELECT ? GLOB ?", (value, glob_to_sql(pattern))).fetchone()[0]
        assert bool(sql) == (glob_to_regex(pattern).fullmatch(value) is not None)
    finally:
        conn.close()


@settings(max_examples=200, deadline=None)
@given(tags=st.lists(TAG_TEXT, max_size=4), probe=TAG_TEXT, ascii_json=st.booleans())
def test_property_tags_has_any_json_spelling(tags, probe, ascii_json):
    """`tags has` finds a tag (no NUL) whatever escaping the JSON array was written with."""
    conn = open_db(":memory:")
    try:
        encoded = json.dumps(tags, ensure_ascii=ascii_json)
        conn.execute("INSERT INTO indicator (type, value, tags) VALUES ('domain', 'a.example', ?)", (encoded,))
        rule = compile_filter(f"tags has {q(probe)}")
        assert select(conn, Rule(rule.text)) == ({1} if probe in tags else set())
    finally:
        conn.close()
