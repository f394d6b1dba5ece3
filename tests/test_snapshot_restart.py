"""A resumed pull whose source changed meanwhile starts a new snapshot, so what the new content lacks is retracted."""

from __future__ import annotations

import pytest

from ctd.config import parse_config
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.fakestore import FakeStore
from tests.storeutil import ingest, show
from tests.test_feed import ETAG, TEXT, FeedServer, make, pull
from tests.test_file_adapter import adapter
from tests.test_file_adapter import pull as file_pull


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def test_file_resumed_unchanged_continues_the_snapshot(tmp_path):
    """An unchanged file resumes after the committed batch, in the same snapshot."""
    (tmp_path / "f.txt").write_text("a.example\nb.example\nc.example\n")
    a = adapter(tmp_path / "f.txt", batch_size=1)
    first = (await file_pull(a))[0]
    assert first.snapshot_start
    rest = await file_pull(a, first.sub_checkpoint)
    assert [b.snapshot_start for b in rest] == [False, False]


async def test_file_changed_since_the_interruption_starts_a_new_snapshot(tmp_path):
    """A file rewritten while the pull was interrupted is read from the top as a new snapshot."""
    path = tmp_path / "f.txt"
    path.write_text("a.example\nb.example\nc.example\n")
    a = adapter(path, batch_size=1)
    first = (await file_pull(a))[0]
    path.write_text("b.example\nc.example\nd.example\n")
    again = await file_pull(a, first.sub_checkpoint)
    assert again[0].snapshot_start and [s.value for s in again[0].sightings] == ["b.example"]


async def test_file_pull_that_finished_but_was_not_completed_starts_a_new_snapshot(tmp_path):
    """A resume point saying the file was read to its end (killed before the pull completed) starts over, fresh."""
    path = tmp_path / "f.txt"
    path.write_text("a.example\n")
    a = adapter(path)
    [last] = await file_pull(a)
    assert last.sub_checkpoint and last.sub_checkpoint.get("done")
    [again] = await file_pull(a, last.sub_checkpoint)
    assert again.snapshot_start


async def test_store_retracts_values_committed_by_the_interrupted_pull(tmp_path, store):
    """Through the source actor: values the changed file no longer holds end inactive after the resumed pull."""
    path = tmp_path / "f.txt"
    path.write_text("".join(f"h{i}.example\n" for i in range(10)))
    cfg = parse_config(f'[plugins.f]\nadapter = "file"\npath = "{path}"\nbatch_size = 4\n')
    plugin = cfg.plugins["f"]
    a = adapter(path, batch_size=4)
    # The interrupted pull: its first batch (h0..h3) committed with its resume point, then a kill.
    first = (await file_pull(a))[0]
    ingest(store.conn, "f", first.sightings, sub=first.sub_checkpoint)
    path.write_text("".join(f"h{i}.example\n" for i in range(2, 10)))  # h0, h1 removed meanwhile
    await pull_once("f", plugin, a, store, AllowlistRef(), SourceStatus("f", plugin))
    assert not show(store.conn, "domain", "h0.example")["active"]
    assert not show(store.conn, "domain", "h1.example")["active"]
    assert show(store.conn, "domain", "h2.example")["active"] and show(store.conn, "domain", "h9.example")["active"]


async def test_feed_resumed_with_the_same_etag_continues_the_snapshot():
    """A resumed download with the validator it started with skips what was committed, in the same snapshot."""
    batches = await pull(make(FeedServer({"feed.txt": TEXT})), sub={"validator": ETAG, "pos": 3})
    assert not any(b.snapshot_start for b in batches)


async def test_feed_resumed_with_another_etag_starts_a_new_snapshot():
    """A feed whose ETag changed since the interrupted pull starts a new snapshot with its first batch."""
    batches = await pull(make(FeedServer({"feed.txt": TEXT})), sub={"validator": '"old"', "pos": 3})
    assert batches[0].snapshot_start and len([s for b in batches for s in b.sightings]) == 5
