"""`ctdctl rules test`: one chunked pass serves the rule and every sharing it feeds, with the same figures as
one query per selection, and lets ingest run between its chunks."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import trio

from ctd.config import parse_config
from ctd.control.commands_sharing import dry_run, limit_warnings
from ctd.rules.compiler import Rule
from ctd.sharing.actor import Sharer
from ctd.store import IngestBatch, PreviewTarget, Selection, api, run_store, to_stage_rows
from ctd.store import sql as store_sql
from ctd.store.ledger import SIZE_SQL, selection_where
from ctd.store.preview import preview
from ctd.store.requests import PreviewSelection
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.storeutil import DAY, NOW, ingest, s

# --- the oracle: the dry run as it was, one full query per selection ------------------------------


def separate_pass(conn: sqlite3.Connection, sel: Selection, size: str = "text", overhead: int = 1) -> dict[str, Any]:
    """Counts by type and serialised size of one selection, with one query of its own (the former dry run)."""
    where, params = selection_where(sel)
    by_type, total, size_total = {}, 0, 0
    for typ, n, b in conn.execute(
        f"SELECT i.type, count(*), coalesce(sum({SIZE_SQL[size]} + {int(overhead)}), 0) "
        f"FROM indicator i WHERE {where} GROUP BY i.type",
        params,
    ):
        by_type[typ] = n
        total += n
        size_total += b
    return {"total": total, "by_type": by_type, "bytes": size_total}


def separate_sample(conn: sqlite3.Connection, sel: Selection, n: int) -> list[dict[str, str]]:
    where, params = selection_where(sel)
    return [
        {"type": t, "value": v}
        for t, v in conn.execute(
            f"SELECT i.type, i.value FROM indicator i WHERE {where} ORDER BY i.last_seen DESC, i.id DESC LIMIT ?",
            [*params, n],
        )
    ]


def narrowed(sel: Selection, t: PreviewTarget) -> Selection:
    return Selection(
        rule=sel.rule, at=sel.at, types=t.types, sources=t.sources, not_from=t.not_from, seen_since=sel.seen_since
    )


# --- a store with several sources, a destination that also reports, retractions, expiry ----------


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    seed(st.conn)
    yield st
    st.close()


def seed(conn: sqlite3.Connection) -> None:
    """Mixed types and sources; some retracted, some expired, some reported back by the destination `dest`."""
    for k in range(60):
        typ = ("url", "domain", "ipv4", "sha256")[k % 4]
        value = {
            "url": f"http://host{k}.example/ä/{k}",  # non-ASCII: bytes differ from characters
            "domain": f"d{k}.example",
            "ipv4": f"10.0.{k // 250}.{k % 250}",
            "sha256": f"{k:064x}",
        }[typ]
        seen = NOW - (k % 7) * DAY  # ties in last_seen across chunks
        srcs = ["a"] if k % 3 == 0 else ["b"] if k % 3 == 1 else ["a", "b"]
        if k % 10 == 0:
            srcs.append("dest")  # loop prevention excludes these
        for src in srcs:
            ingest(conn, src, [s(value, typ, last_seen=seen, expires_at=NOW - 1 if k % 11 == 0 else None)])
        if k % 8 == 0:
            ingest(conn, "a", [s(value, typ, last_seen=seen, retracted=True)], fresh=False)
    store_sql.expire(conn, NOW)


RULE = 'type in (url, domain, ipv4) or value ~ "*0*"'
TARGETS = (
    PreviewTarget(sources=("a",), not_from="dest"),
    PreviewTarget(sources=("a", "b"), not_from="dest", size="json", overhead=3),
    PreviewTarget(types=("url", "domain"), sources=("b",), not_from="elsewhere", overhead=0),
    PreviewTarget(sources=("nobody",), not_from="a"),
    PreviewTarget(),
)


@pytest.fixture(params=["one chunk", "chunks of 3 keys"])
def chunks(request, monkeypatch):
    """Run each dry run in one request or in many tiny ones."""
    if request.param != "one chunk":
        monkeypatch.setattr(api, "PREVIEW_FIRST_SPAN", 3)
        monkeypatch.setattr(api, "PREVIEW_MIN_SPAN", 3)
        monkeypatch.setattr(api, "PREVIEW_MAX_SPAN", 3)
    return request.param


@pytest.mark.parametrize("days", [None, 3])
async def test_one_pass_gives_each_destination_what_its_own_query_gives(store, chunks, days):
    """Totals, by_type and bytes of the rule and of every target equal those of one query per selection."""
    sel = Selection(rule=Rule(RULE), at=NOW, seen_since=NOW - days * DAY if days else None)
    got = await store.rule_test(sel, targets=TARGETS, sample=0)
    targets = got.pop("targets")
    assert got == {**separate_pass(store.conn, sel), "sample": []}
    assert got["total"] > 0
    for target, result in zip(TARGETS, targets, strict=True):
        assert result == separate_pass(store.conn, narrowed(sel, target), target.size, target.overhead), target
    assert len({t["bytes"] for t in targets}) > 2  # the targets differ: the check above is not vacuous


async def test_selection_size_and_overhead_are_the_callers(store, chunks):
    """The rule's own bytes are counted with the size and overhead asked for."""
    sel = Selection(rule=Rule(RULE), at=NOW)
    got = await store.rule_test(sel, size="json", overhead=5, sample=0)
    assert got["bytes"] == separate_pass(store.conn, sel, "json", 5)["bytes"]


async def test_sample_is_the_newest_across_chunks(store, chunks):
    """The sample is the rule's newest entries (last seen, then key, descending; unknown last seen last)."""
    store.conn.execute("UPDATE indicator SET last_seen = NULL WHERE id % 9 = 0")
    sel = Selection(rule=Rule(RULE), at=NOW)
    for n in (1, 5, 200):
        got = await store.rule_test(sel, sample=n)
        assert got["sample"] == separate_sample(store.conn, sel, n)
    assert len(got["sample"]) == got["total"]  # 200 is more than there are: all of them, in order


async def test_empty_store(tmp_path):
    """A dry run of an empty store is all zeros for the rule and its targets."""
    st = FakeStore(str(tmp_path / "db"))
    try:
        got = await st.rule_test(Selection(rule=Rule(RULE), at=NOW), targets=TARGETS[:1])
    finally:
        st.close()
    zero = {"total": 0, "by_type": {}, "bytes": 0}
    assert got == {**zero, "sample": [], "targets": [zero]}


async def test_more_sources_than_one_mask_holds(tmp_path, chunks):
    """With 40 sources named by the targets (two mask columns), each target still gets its own counts."""
    st = FakeStore(str(tmp_path / "db"))
    try:
        for k in range(80):
            ingest(st.conn, f"src{k % 40:02d}", [s(f"v{k}.example", last_seen=NOW - k)])
            if k % 7 == 0:
                ingest(st.conn, f"src{(k + 33) % 40:02d}", [s(f"v{k}.example", last_seen=NOW - k)])
        names = tuple(f"src{k:02d}" for k in range(40))
        targets = (
            PreviewTarget(sources=names[:20], not_from="src35"),
            PreviewTarget(sources=names[30:], not_from="src01"),
            PreviewTarget(sources=(names[39],)),
        )
        sel = Selection(rule=Rule("type = domain"), at=NOW)
        got = await st.rule_test(sel, targets=targets, sample=0)
        for target, result in zip(targets, got["targets"], strict=True):
            assert result == separate_pass(st.conn, narrowed(sel, target)), target
        assert [r["total"] for r in got["targets"]] == [41, 22, 2]  # not vacuous: each target differs
    finally:
        st.close()


# --- the control command's figures: per sharing configuration, with its limits --------------------

SRC = 'adapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "unused"\npull = false\n'
CONFIG = f"""
[plugins.a]
{SRC}
[plugins.b]
{SRC}
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "dry"
pull = false
[plugins.full]
adapter = "tests.fake_adapters:FullDestination"
key = "dry-full"
pull = false
[rules.r]
filter = '{RULE}'
[rules.old]
filter = "type = url"
[sharing.capped]
sources = ["a"]
rule = "r"
destination = "dest"
action = "add"
params = {{ list = "one", max_entries = 5 }}
[sharing.bytes]
sources = ["a", "b"]
rule = "r"
destination = "dest"
action = "add"
params = {{ list = "two", max_entries = 1000, max_bytes = 400 }}
[sharing.json]
sources = ["b"]
rule = "r"
destination = "full"
action = "replace"
params = {{ max_entries = 38 }}
"""


def sharers(store: FakeStore, *names: str, rule: str | None = None) -> list[tuple[str, Sharer]]:
    cfg = parse_config(CONFIG)
    fakes = Fakes()
    out = []
    for name in names:
        sh = cfg.sharing[name]
        dest = cfg.plugins[sh.destination]
        rc = cfg.rules[rule or sh.rule]
        out.append((name, Sharer(name, sh, rc, dest, fakes.adapter(sh.destination, dest), store)))
    return out


def separate_dry_run(conn: sqlite3.Connection, rule: Rule, shs: list[tuple[str, Sharer]], since: int | None) -> Any:
    """The sharing part of the former dry run: a query per sharing, its warnings against its limits."""
    out = []
    for name, sh in shs:
        res = separate_pass(conn, sh.selection(NOW, seen_since=since), sh.spec.size, sh.spec.entry_overhead)
        out.append((name, res, limit_warnings(res["total"], res["bytes"], sh.max_entries, sh.max_bytes)))
    return out


@pytest.mark.parametrize("days", [None, 2])
async def test_sharings_get_the_figures_and_warnings_of_their_own_pass(store, chunks, days):
    """Three sharings with different caps, sizes and overheads: the same totals, bytes, types, warnings."""
    rule = Rule(RULE)
    since = NOW - days * DAY if days else None
    shs = sharers(store, "bytes", "capped", "json")
    got = await dry_run(store, rule, shs, at=NOW, seen_since=since)
    want = separate_dry_run(store.conn, rule, shs, since)
    assert [(e["name"], {k: e[k] for k in ("total", "by_type", "bytes")}, e["warnings"]) for e in got["sharing"]] == [
        (n, r, w) for n, r, w in want
    ]
    assert got["warnings"] == [f"{n}: {w}" for n, _, ws in want for w in ws]
    assert {e["name"]: (e["max_entries"], e["max_bytes"]) for e in got["sharing"]} == {
        "bytes": (1000, 400),
        "capped": (5, None),
        "json": (38, None),
    }
    if days is None:  # each kind of warning shows up, so the comparison above is not vacuous
        text = " ".join(got["warnings"])
        assert "entries exceed" in text and "bytes exceed" in text and "above 90%" in text
    assert got["sample"] == separate_sample(store.conn, Selection(rule=rule, at=NOW, seen_since=since), 10)


async def test_a_sharing_on_an_older_rule_gets_its_own_pass(store):
    """A sharing still running another version of the rule is counted with the rule it runs."""
    rule = Rule(RULE)
    (current,) = sharers(store, "capped")
    (stale,) = sharers(store, "json", rule="old")
    got = await dry_run(store, rule, [current, stale], at=NOW, seen_since=None)
    want = separate_dry_run(store.conn, rule, [current, stale], None)
    assert [(e["name"], e["total"], e["bytes"], e["warnings"]) for e in got["sharing"]] == [
        (n, r["total"], r["bytes"], w) for n, r, w in want
    ]
    assert set(got["sharing"][1]["by_type"]) == {"url"}


async def test_one_store_pass_per_chunk_for_all_sharings(store):
    """The rule and three sharings sharing it cost one store request (one chunk), not four."""
    before = store.handled
    await dry_run(store, Rule(RULE), sharers(store, "bytes", "capped", "json"), at=NOW, seen_since=None)
    assert store.handled - before == 1


# --- chunks ---------------------------------------------------------------------------------------


def test_a_chunk_covers_at_most_its_span_and_stops_at_the_end(store):
    """A request covers keys (after, after + span], never past the end fixed by the first chunk."""
    sel = Selection(rule=Rule("type = domain or type = url or type = ipv4 or type = sha256"), at=NOW)
    first = preview(store.conn, PreviewSelection(selection=sel, span=4, sample=100))
    assert first.after == 4 and sum(n for n, _ in first.selection.values()) <= 4
    assert all(key <= 4 for _, key, _, _ in first.sample)
    ingest(store.conn, "a", [s("late.example", last_seen=NOW)])  # after the dry run began
    last = preview(store.conn, PreviewSelection(selection=sel, span=10**6, after=first.after, end=first.end))
    assert last.after == last.end == first.end
    assert "late.example" not in {v for _, _, _, v in last.sample}


def test_next_span_aims_at_the_chunk_time():
    """A slow chunk shrinks the next one in proportion; a fast one at most doubles it; both stay in bounds."""
    target = api.PREVIEW_CHUNK_SECONDS
    assert api.next_span(10_000, target * 4) == 2_500
    assert api.next_span(10_000, target / 100) == 20_000
    assert api.next_span(10_000, 0.0) == 20_000
    assert api.next_span(api.PREVIEW_MIN_SPAN, 100.0) == api.PREVIEW_MIN_SPAN
    assert api.next_span(api.PREVIEW_MAX_SPAN, 0.0) == api.PREVIEW_MAX_SPAN


async def test_ingest_runs_between_chunks_of_a_dry_run(tmp_path, monkeypatch):
    """An ingest batch asked for during a dry run is done before the dry run ends, not after it."""
    monkeypatch.setattr(api, "PREVIEW_FIRST_SPAN", 1)
    monkeypatch.setattr(api, "PREVIEW_MIN_SPAN", 1)
    monkeypatch.setattr(api, "PREVIEW_MAX_SPAN", 1)
    conn = store_sql.connect(str(tmp_path / "db"))
    ingest(conn, "a", [s(f"d{k}.example", last_seen=NOW) for k in range(200)])
    conn.close()
    order: list[str] = []
    async with trio.open_nursery() as nursery:
        store = await nursery.start(run_store, str(tmp_path / "db"))
        ask, chunks, first, finished = store._execute, [], trio.Event(), trio.Event()

        async def counted(request: Any) -> Any:
            got = await ask(request)
            if isinstance(request, PreviewSelection):
                chunks.append(request.after)
                first.set()
            return got

        store._execute = counted  # see each chunk answered

        async def dry() -> None:
            got = await store.rule_test(Selection(rule=Rule("type = domain"), at=NOW))
            order.append(f"dry run {got['total']} in {len(chunks)} chunks")
            finished.set()

        nursery.start_soon(dry)
        await first.wait()
        rows = to_stage_rows(
            [s("new.example", last_seen=NOW)], now=NOW, reputation=None, extra_tags=(), allowlisted=None
        )
        await store.ingest(
            IngestBatch(
                source="b",
                rows=rows,
                policy="last_seen",
                aging_days=90,
                now=NOW,
                fresh=True,
                snapshot_end=False,
                sub=None,
                cursor=None,
            )
        )
        order.append(f"ingest after {len(chunks)} chunks")
        await finished.wait()
        nursery.cancel_scope.cancel()
    assert order == ["ingest after 2 chunks", "dry run 200 in 200 chunks"]
