"""Full-replace lists streamed from the store to the destination in chunks (issue 14, target 1)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, ClassVar

import pytest

from ctd.adapters.file.push import ListFile, render, write_atomically
from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.model import ActionSpec, ListWriter, PushResult, ShareItem
from ctd.plugins import open_adapter
from ctd.sharing import fulllist as sharing_fulllist
from ctd.sharing.actor import Sharer
from ctd.store import fulllist as store_fulllist
from ctd.store.requests import list_hash_entry
from tests.fake_adapters import FakeAdapter, Fakes, FullParams
from tests.fakestore import FakeStore
from tests.storeutil import NOW, ingest, s

CFG = """
[plugins.a]
adapter = "file"
pull = false
[plugins.lists]
adapter = "file"
pull = false
[plugins.chunky]
adapter = "tests.test_streamed_lists:ChunkedDestination"
key = "chunky"
pull = false
[rules.r]
filter = "type = url"
[sharing.s]
sources = ["a"]
rule = "r"
destination = "{dest}"
action = "{action}"
params = {params}
"""


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def urls(n: int, t: int = NOW) -> list:
    return [s(f"http://{i}.example/", "url", last_seen=t - i) for i in range(n)]


def item(value: str, **kw: Any) -> ShareItem:
    base: dict[str, Any] = dict(
        type="url",
        value=value,
        severity="high",
        reputation=7,
        tags=("a", "b\u2028c"),
        comments="",
        reference="",
        first_seen=NOW,
        last_seen=NOW,
        expires_at=None,
        sources=("feed",),
    )
    base.update(kw)
    return ShareItem(**base)


class ChunkedDestination(FakeAdapter):
    """A full-replace destination that streams: it records each chunk it is handed."""

    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "replace": ActionSpec(description="a list", mode="full", params=FullParams),
    }
    chunks: ClassVar[list[list[str]]] = []
    committed: ClassVar[list[str]] = []

    async def open_list(self, action: str, params: Any) -> ListWriter:
        outer = self

        class Writer(ListWriter):
            def __init__(self) -> None:
                self.got: list[str] = []

            async def write(self, items: list[ShareItem]) -> dict[str, str]:
                outer.chunks.append([it.value for it in items])
                self.got.extend(it.value for it in items)
                return {}

            async def commit(self) -> PushResult:
                outer.committed[:] = self.got
                return PushResult()

        return Writer()


class RefusingAtCommit(FakeAdapter):
    """A destination that cannot stream (gets the whole list in ``replace``) and refuses one value."""

    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "replace": ActionSpec(description="a list", mode="full", params=FullParams),
    }
    lists: ClassVar[list[list[str]]] = []

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        self.lists.append([it.value for it in items])
        return PushResult(rejected={"http://1.example/": "no thanks"})


def sharer_for(store: FakeStore, adapter: Any, dest: str, action: str, params: str) -> Sharer:
    cfg = parse_config(CFG.format(dest=dest, action=action, params=params))
    sh = cfg.sharing["s"]
    return Sharer("s", sh, cfg.rules["r"], cfg.plugins[dest], adapter, store)


def file_plugin(out: Any) -> Any:
    return parse_config(CFG.format(dest="lists", action="write", params=f'{{ path = "{out}" }}')).plugins["lists"]


def ledger(store: FakeStore) -> dict[str, tuple[str, str | None]]:
    return {
        v: (st, err)
        for v, st, err in store.conn.execute(
            "SELECT i.value, d.state, d.error FROM delivery d JOIN indicator i ON i.id = d.iid"
        )
    }


@pytest.mark.parametrize("fmt", ["text", "csv", "jsonl"])
async def test_a_list_written_in_chunks_is_the_same_file_as_one_written_whole(tmp_path, fmt):
    """ListFile fed chunk by chunk writes byte for byte what the whole-list render writes, refusals included."""
    items = [item(f"http://{i}.example/") for i in range(7)] + [item("http://bad.example/\nx")]
    whole_rejected: dict[str, str] = {}
    write_atomically(str(tmp_path / "whole"), render(items, fmt, whole_rejected))
    writer = await ListFile.open(str(tmp_path / "parts"), fmt)
    rejected: dict[str, str] = {}
    for i in range(0, len(items), 3):
        rejected.update(await writer.write(items[i : i + 3]))
    await writer.commit()
    assert (tmp_path / "parts").read_bytes() == (tmp_path / "whole").read_bytes()
    assert rejected == whole_rejected and list(rejected) == ["http://bad.example/\nx"]
    assert sorted(os.listdir(tmp_path)) == ["parts", "whole"]  # no temporary file left


async def test_an_empty_streamed_csv_list_still_has_its_header(tmp_path):
    """A list with no entry is still a whole file: the csv header alone."""
    writer = await ListFile.open(str(tmp_path / "l.csv"), "csv")
    await writer.commit()
    assert (tmp_path / "l.csv").read_bytes() == b"".join(render([], "csv"))


async def test_a_discarded_list_leaves_the_old_file_and_no_temporary_file(tmp_path):
    """discard() removes the temporary file; the list file keeps its old content."""
    (tmp_path / "l.txt").write_text("old\n")
    writer = await ListFile.open(str(tmp_path / "l.txt"), "text")
    await writer.write([item("http://new.example/")])
    await writer.discard()
    assert os.listdir(tmp_path) == ["l.txt"] and (tmp_path / "l.txt").read_text() == "old\n"


async def test_the_adapter_receives_the_list_in_chunks_never_whole(store, monkeypatch):
    """A streaming destination gets the list chunk by chunk, newest first; no store read returns over a chunk."""
    monkeypatch.setattr(sharing_fulllist, "CHUNK", 3)
    monkeypatch.setattr(store_fulllist, "LIST_CHUNK_MAX", 2)  # the store's own cap wins over the asker's
    ChunkedDestination.chunks.clear()
    cfg = parse_config(CFG.format(dest="chunky", action="replace", params="{}"))
    adapter = Fakes().adapter("chunky", cfg.plugins["chunky"])
    ingest(store.conn, "a", urls(7))
    res = await sharer_for(store, adapter, "chunky", "replace", "{}").share_once()
    assert res.pushed == 7
    assert ChunkedDestination.chunks == [[f"http://{i}.example/", f"http://{i + 1}.example/"] for i in (0, 2, 4)] + [
        ["http://6.example/"]
    ]
    assert ChunkedDestination.committed == [f"http://{i}.example/" for i in range(7)]


async def test_streamed_list_hash_is_the_hash_of_the_planned_list(store, tmp_path):
    """The hash recorded for a streamed list is SHA-256 over (type, value, fingerprint) in list order, as before."""
    out = tmp_path / "out.txt"
    ingest(store.conn, "a", urls(5))
    async with open_adapter("lists", file_plugin(out)) as ad:
        await sharer_for(store, ad, "lists", "write", f'{{ path = "{out}" }}').share_once()
    h = hashlib.sha256()
    for typ, value, sev, rep, tags in store.conn.execute(
        "SELECT type, value, severity, reputation, tags FROM indicator ORDER BY last_seen DESC, id DESC"
    ):
        h.update(list_hash_entry(typ, value, f"{sev}|{rep}|{tags}||"))
    assert store.conn.execute("SELECT list_hash FROM sharing").fetchone()[0] == h.hexdigest()
    assert out.read_text().splitlines() == [f"http://{i}.example/" for i in range(5)]


async def test_caps_and_unchanged_detection_hold_for_a_streamed_file(store, tmp_path):
    """Over max_entries the newest are written and the rest recorded unshared; an unchanged list is not rewritten."""
    out = tmp_path / "lists" / "out.txt"
    plugin = file_plugin(out)
    ingest(store.conn, "a", urls(4))
    async with open_adapter("lists", plugin) as ad:
        sh = sharer_for(store, ad, "lists", "write", f'{{ path = "{out}", max_entries = 3 }}')
        res = await sh.share_once()
        assert res.unshared == 1 and out.read_text().splitlines() == [f"http://{i}.example/" for i in range(3)]
        assert ledger(store)["http://3.example/"] == ("unshared", "over limit")
        mtime = out.stat().st_mtime_ns
        sh.forget()  # plan again although nothing changed: streamed, hashed, found unchanged
        res = await sh.share_once()
        assert res.unchanged and res.unshared == 1 and out.stat().st_mtime_ns == mtime
        assert os.listdir(out.parent) == ["out.txt"]
        out.unlink()  # the target lost its list: delivered again although unchanged
        res = await sh.share_once()
        assert not res.unchanged and out.read_text().splitlines() == [f"http://{i}.example/" for i in range(3)]


async def test_refusals_reported_at_commit_reach_the_ledger(store):
    """A destination that takes the list whole (replace) and refuses a value: that value is recorded failed."""
    RefusingAtCommit.lists.clear()
    cfg = parse_config(
        CFG.format(dest="chunky", action="replace", params="{}").replace(
            "tests.test_streamed_lists:ChunkedDestination", "tests.test_streamed_lists:RefusingAtCommit"
        )
    )
    adapter = Fakes().adapter("chunky", cfg.plugins["chunky"])
    ingest(store.conn, "a", urls(3))
    res = await sharer_for(store, adapter, "chunky", "replace", "{}").share_once()
    assert RefusingAtCommit.lists == [[f"http://{i}.example/" for i in range(3)]]  # as before: one list
    assert res.pushed == 2 and res.rejected == 1
    assert ledger(store) == {
        "http://0.example/": ("shared", None),
        "http://1.example/": ("failed", "no thanks"),
        "http://2.example/": ("shared", None),
    }


async def test_a_failed_write_leaves_no_temporary_file_and_records_nothing(store, tmp_path):
    """The list file cannot be renamed into place: the pass fails, no temporary file is left, no ledger row."""
    out = tmp_path / "lists" / "out.txt"
    out.mkdir(parents=True)  # a directory where the list should go: the rename fails
    plugin = file_plugin(out)
    ingest(store.conn, "a", urls(3))
    async with open_adapter("lists", plugin) as ad:
        with pytest.raises(SourceUnavailable):
            await sharer_for(store, ad, "lists", "write", f'{{ path = "{out}" }}').share_once()
    assert os.listdir(out.parent) == ["out.txt"] and ledger(store) == {}
