"""Line-oriented list outputs (file text/csv/jsonl, EDL): one indicator is always exactly one line."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.adapters.edl.adapter import write_list
from ctd.adapters.file.push import render
from ctd.canon import canonicalize
from ctd.config import parse_config
from ctd.errors import InvalidIndicator
from ctd.model import INDICATOR_TYPES, ShareItem, now
from ctd.plugins import adapter_class
from ctd.sharing.actor import Sharer
from ctd.valuegate import value_problem
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s
from tests.test_value_gate import HOSTILE, SAMPLES

FORMATS = ("text", "csv", "jsonl")
INJECTED = "http://evil.example/a\n10.0.0.0/8"


def item(value: str, typ: str = "url", tags: tuple[str, ...] = (), comments: str = "") -> ShareItem:
    return ShareItem(
        type=typ,
        value=value,
        severity="high",
        reputation=5,
        tags=tags,
        comments=comments,
        reference="",
        first_seen=None,
        last_seen=None,
        expires_at=None,
        sources=("a",),
    )


def rendered(items: list[ShareItem], fmt: str) -> tuple[list[str], dict[str, str]]:
    """The output's lines (split on newline only) and the refused values."""
    rejected: dict[str, str] = {}
    text = b"".join(render(items, fmt, rejected)).decode()  # strict UTF-8: no surrogate ever escapes
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1], rejected


def assert_one_line_each(lines: list[str], written: int, fmt: str) -> None:
    assert len(lines) == written + (fmt == "csv")
    joined = "".join(line + "\n" for line in lines)
    assert joined.splitlines() == lines, "a line break other than LF in the output"
    for line in lines:
        assert line.isprintable(), f"unprintable character in {line!r}"


# --- renderers refuse what the gate refuses ----------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ch", HOSTILE, ids=lambda c: f"U+{ord(c):04X}")
def test_renderer_refuses_hostile_value(fmt, ch):
    """A stored value with a hostile character is left out of every format and reported with a reason."""
    bad = f"http://evil.example/a{ch}10.0.0.0/8"
    lines, rejected = rendered([item("http://ok.example/"), item(bad)], fmt)
    assert_one_line_each(lines, 1, fmt)
    assert rejected == {bad: f"refused for a line-oriented list: {value_problem(bad, 'url')}"}


@pytest.mark.parametrize("typ", sorted(SAMPLES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_type_through_every_format(typ, fmt):
    """Each indicator type with line-break and separator characters inside renders one line per good value."""
    head, tail = SAMPLES[typ]
    items = [item(head + tail, typ)]
    items += [item(head + ch + tail, typ) for ch in ("\n", "\r", "\r\n", "\u2028", "\x85")]
    lines, rejected = rendered(items, fmt)
    assert_one_line_each(lines, 1, fmt)
    assert len(rejected) == 5
    assert (head + tail) in lines[-1]


def test_text_reason_says_what_was_wrong():
    """The reason names the character and offset, and never quotes the value."""
    _, rejected = rendered([item(INJECTED)], "text")
    assert rejected[INJECTED] == "refused for a line-oriented list: contains a control character U+000A at offset 21"


def test_trailing_newline_in_stored_value_is_refused():
    """A stored value is never stripped by the renderer: a trailing newline makes it refused."""
    lines, rejected = rendered([item("evil.example\n", "domain")], "text")
    assert lines == [] and list(rejected) == ["evil.example\n"]


def test_over_long_stored_value_is_refused():
    """A stored value over its type's cap is refused by the renderer too."""
    big = "http://a.example/" + "a" * 9000
    lines, rejected = rendered([item(big)], "text")
    assert lines == [] and rejected[big].endswith("longer than 8192 characters (9017)")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(
    "ch", ["\r", "\n", "\u2028", "\x85", "\x1b", "\x7f", "\ud800", "\u202e"], ids=lambda c: f"U+{ord(c):04X}"
)
def test_hostile_tags_and_comments_stay_on_one_line(fmt, ch):
    """Tags and comments with line breaks or controls never break a csv/jsonl row, nor the write."""
    lines, rejected = rendered([item("http://ok.example/", tags=(f"a{ch}b",), comments=f"x{ch}y")], fmt)
    assert rejected == {}
    assert_one_line_each(lines, 1, fmt)


def test_jsonl_escapes_separators_losslessly():
    """U+2028, C1 controls and bidi controls in jsonl text fields are JSON escapes: the value reads back intact."""
    comment = "a\u2028b\x85c\u202ed\x7fe"
    [line], _ = rendered([item("http://ok.example/", comments=comment)], "jsonl")
    assert line.isascii() and json.loads(line)["comments"] == comment


def test_csv_escapes_control_characters_in_tags():
    """A control character in a csv tag is written as a visible \\uXXXX escape."""
    lines, _ = rendered([item("http://ok.example/", tags=("c2\r10.0.0.0/8",))], "csv")
    assert lines[1].endswith("c2\\u000d10.0.0.0/8,a")


def test_edl_write_list_refuses_and_reports():
    """The EDL list file holds one line per indicator; refused values come back with reasons."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "l.txt")
        rejected: dict[str, str] = {}
        write_list(path, [item("http://ok.example/"), item(INJECTED)], rejected)
        with open(path, "rb") as f:
            assert f.read() == b"http://ok.example/\n"
    assert list(rejected) == [INJECTED]


# --- the ledger ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    st_ = FakeStore(str(tmp_path / "db"))
    yield st_
    st_.close()


def sharer(tmp_path, store, dest: str):
    plugins = {
        "edl": f'adapter = "edl"\npull = false\nbind = "127.0.0.1:0"\nlists_dir = "{tmp_path}/edl"\n',
        "file": 'adapter = "file"\npull = false\n',
    }
    params = '{ name = "urls" }' if dest == "edl" else f'{{ path = "{tmp_path}/out.txt" }}'
    action = "list" if dest == "edl" else "write"
    cfg = parse_config(f"""
[daemon]
state_dir = "{tmp_path}/var"
[plugins.a]
adapter = "file"
pull = false
[plugins.{dest}]
{plugins[dest]}
[rules.r]
filter = "type = url"
[sharing.s]
sources = ["a"]
rule = "r"
destination = "{dest}"
action = "{action}"
params = {params}
""")
    sh = cfg.sharing["s"]
    plugin = cfg.plugins[dest]
    return Sharer("s", sh, cfg.rules["r"], plugin, adapter_class(plugin.adapter)(dest, plugin.options), store)


@pytest.mark.parametrize(("dest", "out"), [("edl", "edl/urls.txt"), ("file", "out.txt")])
async def test_refused_value_is_failed_in_the_ledger_and_logged(tmp_path, store, dest, out):
    """A full-replace pass leaves a hostile stored value out, marks it failed with the reason, and logs it."""
    t = now()
    # A value that reached the store without the gate (stored by an older version, or a third-party adapter).
    seed = [s("http://ok.example/", "url", last_seen=t), s(INJECTED, "url", last_seen=t - 1)]
    ingest(store.conn, "a", seed, now=t, gate=False)
    sh = sharer(tmp_path, store, dest)
    with structlog.testing.capture_logs() as logs:
        res = await sh.share_once()
    assert (res.pushed, res.rejected) == (1, 1)
    assert (tmp_path / out).read_text() == "http://ok.example/\n"
    [row] = await store.ledger_rows("s", ("failed",), 10)
    assert row["value"] == INJECTED
    assert row["error"] == "refused for a line-oriented list: contains a control character U+000A at offset 21"
    [warn] = [e for e in logs if e.get("ctd_event") == "indicators_refused"]
    assert warn["log_level"] == "warning" and warn["ctd_count"] == 1
    assert warn["examples"] == [row["error"]]
    res = await sh.share_once()  # unchanged list: still failed, not re-sent as shared
    assert res.unchanged and (await store.ledger_counts("s"))["counts"]["failed"] == 1


# --- property: random strings through canonicalisation and every renderer -----------------

_PREFIXES = [
    "http://a.example/",
    "https://b.example:8443/p?q=",
    "evil",
    "bob@",
    "10.0.0.0/",
    "2001:db8::",
    "192.0.2.",
    "d41d8cd98f00b204e9800998ecf8427e",
    "",
]
_PIECES = st.one_of(st.sampled_from(HOSTILE + ["\r\n", "[.]", "[ . ]", ".", "/", "@", ":"]), st.characters())
_TEXT = st.lists(_PIECES, max_size=12).map("".join)
_RAW = st.builds(
    lambda p, body, end: p + body + end,
    st.sampled_from(_PREFIXES),
    _TEXT,
    st.sampled_from(["", ".example", "/x", "1", "::1"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([None, *INDICATOR_TYPES]), _RAW, _TEXT), max_size=12))
def test_property_no_output_line_ever_breaks(records):
    """Random strings with every control/separator: every renderer writes one printable line per accepted value."""
    canonical, raw = [], []
    for type_, value, tag in records:
        raw.append(item(value, type_ or "url", tags=(tag,), comments=tag))
        try:
            typ, v = canonicalize(type_, value)
        except InvalidIndicator:
            continue
        assert value_problem(v, typ) is None, (value, v)
        canonical.append(item(v, typ, tags=(tag,), comments=tag))
    for items in (canonical, raw):
        refused = sum(value_problem(it.value, it.type) is not None for it in items)
        if items is canonical:
            assert refused == 0
        for fmt in FORMATS:
            lines, rejected = rendered(items, fmt)
            assert_one_line_each(lines, len(items) - refused, fmt)
            assert set(rejected) <= {it.value for it in items}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "l.txt")
            write_list(path, items)
            with open(path, "rb") as f:
                assert_one_line_each(f.read().decode().split("\n")[:-1], len(items) - refused, "text")
