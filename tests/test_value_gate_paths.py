"""Every path by which a value reaches the store passes the value gate: CSV quoted fields keep their
line breaks for the gate to see, third-party sightings are gated on their way in, and values an older
ctd stored before the gate existed are retracted by a store migration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
import structlog
import trio

from ctd.config import parse_config
from ctd.model import Adapter, Batch, PullContext, Rejected, Sighting
from ctd.plugins import open_adapter
from ctd.sharing.actor import Sharer
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from ctd.store import schema
from tests.fake_adapters import Fakes
from tests.fakestore import FakeStore
from tests.loopback import ok, serve
from tests.storeutil import NOW, ingest, s

CTX = PullContext(since=0, now=1_800_000_000)
# A quoted CSV field with a line break: joined without it, it is the valid URL http://evil.example/j10.0.0.0/8.
GATE_REASON = "contains a control character U+000A at offset 21"
CSV = b'url,threat\n"http://evil.example/j\n10.0.0.0/8",malware\n"http://evil.example/k\r\n*.microsoft.com",x\nhttp://fine.example/a,malware\n'


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


async def pull_all(toml: str, name: str) -> list:
    cfg = parse_config(toml)
    async with open_adapter(name, cfg.plugins[name]) as adapter:
        return [b async for b in adapter.pull(CTX)]


# --------------------------------------------------------------------------- CSV quoted line breaks


async def test_feed_csv_quoted_field_keeps_its_line_break_for_the_gate():
    """A csv feed's quoted field spanning lines is refused by the gate, never stored with its line break dropped."""
    with serve("127.0.0.1", ok(CSV, "text/csv")) as srv:
        toml = (
            f'[plugins.f]\nadapter = "feed"\nurl = "{srv.base}/feed.csv"\nformat = "csv"\n'
            'value_column = "url"\ntype = "url"\n'
        )
        batches = await pull_all(toml, "f")
    assert [s.value for b in batches for s in b.sightings] == ["http://fine.example/a"]
    rejected = [(r.where, r.reason.split(":")[0]) for b in batches for r in b.rejected]
    # The line splitter drops a CR before LF, so both fields keep an LF.
    assert rejected == [("line 2", GATE_REASON), ("line 4", GATE_REASON)]


async def test_file_csv_quoted_field_keeps_its_line_break_for_the_gate(tmp_path):
    """The file adapter's csv reader (shared with feeds) hands a quoted line break to the gate as well."""
    path = tmp_path / "iocs.csv"
    path.write_bytes(CSV.replace(b"url,threat", b"value,threat"))
    toml = f'[plugins.f]\nadapter = "file"\npath = "{path}"\nformat = "csv"\ntype = "url"\n'
    batches = await pull_all(toml, "f")
    assert [s.value for b in batches for s in b.sightings] == ["http://fine.example/a"]
    assert [r.reason.split(":")[0] for b in batches for r in b.rejected] == [GATE_REASON, GATE_REASON]


# --------------------------------------------------------------------------- third-party sightings


class RawAdapter(Adapter):
    """A third-party adapter that yields sightings as it likes, without canonicalising them."""

    can_pull: ClassVar[bool] = True

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        await trio.lowlevel.checkpoint()
        yield Batch(
            sightings=[
                Sighting(type="url", value="http://evil.example/a\n10.0.0.0/8"),
                Sighting(type="domain", value="evil\x1b[2J.example"),
                Sighting(type="url", value="http://x.example/" + "a" * 9000),
                Sighting(type="domain", value="rtl\u202e.example"),
                Sighting(type="no-such-type", value="x.example"),
                Sighting(type="domain", value=""),
                Sighting(type="domain", value="fine.example"),
            ],
            rejected=[Rejected(where="record 9", reason="the adapter's own refusal")],
            snapshot_end=True,
        )


async def test_third_party_sightings_pass_the_gate_on_their_way_to_the_store(tmp_path):
    """Sightings from any adapter failing the value gate (or of no known type) are rejected as invalid, never stored."""
    cfg = parse_config('[plugins.raw]\nadapter = "tests.test_value_gate_paths:RawAdapter"\n')
    plugin = cfg.plugins["raw"]
    store = FakeStore(str(tmp_path / "db"))
    try:
        with structlog.testing.capture_logs() as logs:
            async with open_adapter("raw", plugin) as adapter:
                res = await pull_once("raw", plugin, adapter, store, AllowlistRef(), SourceStatus("raw", plugin))
        stored = store.conn.execute("SELECT type, value FROM indicator").fetchall()
    finally:
        store.close()
    assert stored == [("domain", "fine.example")]
    assert (res.new, res.invalid) == (1, 7)
    [warning] = [e for e in logs if e.get("ctd_event") == "indicators_rejected_invalid"]
    assert warning["ctd_count"] == 7
    assert warning["examples"] == [
        "record 9: the adapter's own refusal",
        "url sighting: contains a control character U+000A at offset 21",
        "domain sighting: contains a control character U+001B at offset 4",
        "url sighting: longer than 8192 characters (9017)",
        "domain sighting: contains a bidi control character U+202E at offset 3",
    ]


# --------------------------------------------------------------------------- values stored before the gate

HOSTILE = "http://evil.example/a\n10.0.0.0/8"
SHARE_CFG = """
[plugins.a]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.b]
adapter = "tests.fake_adapters:ScriptedAdapter"
key = "unused"
pull = false
[plugins.dest]
adapter = "tests.fake_adapters:MemoryDestination"
key = "old-values"
pull = false
[rules.r]
filter = "type in (url, domain)"
[sharing.s]
sources = ["a", "b"]
rule = "r"
destination = "dest"
action = "add"
"""


def sharer(store: FakeStore, fakes: Fakes) -> Sharer:
    cfg = parse_config(SHARE_CFG)
    sh = cfg.sharing["s"]
    return Sharer("s", sh, cfg.rules["r"], cfg.plugins["dest"], fakes.adapter("dest", cfg.plugins["dest"]), store)


async def test_values_stored_before_the_gate_are_retracted_by_a_migration_and_withdrawn(tmp_path, monkeypatch):
    """A database of the previous schema holding a hostile value is migrated: every entry retracted with the reason, the
    indicator inactive, the ledger kept, and the next sharing pass withdraws it from an incremental destination."""
    path = str(tmp_path / "ctd.db")
    fakes = Fakes()
    steps = schema.MIGRATIONS
    previous = steps.index(schema._retract_values_failing_the_gate)
    # The tables today's ingest writes (later migrations too), filled as an older ctd did: without the gate
    # migration, which the reopened store then runs as the one step it still owes.
    monkeypatch.setattr(schema, "MIGRATIONS", [*steps[:previous], lambda conn: None, *steps[previous + 1 :]])
    old = FakeStore(path)
    try:
        for source in ("a", "b"):  # as an older ctd stored them: no gate between the adapter and the store
            ingest(old.conn, source, [s(HOSTILE, "url"), s("fine.example")], now=NOW, gate=False)
        await sharer(old, fakes).share_once()
        old.conn.execute(f"PRAGMA user_version = {previous}")
    finally:
        old.close()
    remote = fakes.remote("old-values")
    assert set(remote.items) == {HOSTILE, "fine.example"}  # what an older ctd shared
    later = [lambda conn: None] * (len(steps) - previous - 1)  # already there
    monkeypatch.setattr(schema, "MIGRATIONS", [*steps[: previous + 1], *later])

    with structlog.testing.capture_logs() as logs:
        new = FakeStore(path)
    try:
        conn = new.conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        [event] = [e for e in logs if e.get("ctd_event") == "store_values_retracted"]
        assert event["ctd_count"] == 1 and event["log_level"] == "warning"
        (iid, active) = conn.execute("SELECT id, active FROM indicator WHERE value = ?", (HOSTILE,)).fetchone()
        assert active == 0
        entries = conn.execute("SELECT retracted, comments FROM sighting WHERE iid = ?", (iid,)).fetchall()
        assert len(entries) == 2 and all(r == 1 for r, _ in entries)
        assert all("value gate" in c and "U+000A at offset 21" in c for _, c in entries)
        fine = conn.execute("SELECT active FROM indicator WHERE value = 'fine.example'").fetchone()
        assert fine == (1,)

        remote.calls.clear()
        await sharer(new, fakes).share_once()
        assert ("retract", [HOSTILE]) in remote.calls
        assert set(remote.items) == {"fine.example"}
        ledger = conn.execute("SELECT state FROM delivery WHERE iid = ?", (iid,)).fetchall()
        assert ledger == [("retracted",)]  # withdrawn, and its history kept
    finally:
        new.close()


def test_a_fresh_database_runs_the_gate_migration_quietly():
    """On a new database the gate migration has nothing to check: no line at all (a check of a store logs its count)."""
    import sqlite3

    conn = sqlite3.connect(":memory:", isolation_level=None)
    with structlog.testing.capture_logs() as logs:
        schema.migrate(conn)
    assert [e for e in logs if e.get("ctd_event") == "store_values_retracted"] == []
