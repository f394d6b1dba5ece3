"""Progress of a long pull: a line every ~10 s, and percent/ETA in `ctdctl sources` (issue 13, findings 3-4)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import structlog
import trio

from ctd.ctdctl import render
from ctd.model import Adapter, Batch, PullContext, Sighting
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
from tests.fakestore import FakeStore
from tests.test_source import plugin


class Slow(Adapter):
    """Five batches, 7 s apart, of a 1000-byte body whose size is known up front."""

    can_pull = True

    def __init__(self) -> None:
        super().__init__("slow", None)
        self.seen: list[dict] = []

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        ctx.progress.bytes_total = 1000
        for i in range(5):
            await trio.sleep(7)
            ctx.progress.bytes_read += 200
            yield Batch(sightings=[Sighting(type="domain", value=f"v{i}.example")])


@pytest.fixture
def store(tmp_path):
    s = FakeStore(str(tmp_path / "db"))
    yield s
    s.close()


async def test_long_pull_logs_progress_every_ten_seconds(store, autojump_clock) -> None:
    """A 35 s pull logs source_pull_progress at 10, 20 and 30 s with records, bytes of total, rate and ETA."""
    p = plugin("progress")
    status = SourceStatus("slow", p)
    with structlog.testing.capture_logs() as logs:
        result = await pull_once("slow", p, Slow(), store, AllowlistRef(), status)
    lines = [e for e in logs if e.get("ctd_event") == "source_pull_progress"]
    assert [e["elapsed_s"] for e in lines] == [10.0, 20.0, 30.0]
    first = lines[0]
    assert (first["ctd_count"], first["bytes_read"], first["bytes_total"], first["percent"]) == (1, 200, 1000, 20.0)
    assert first["eta_s"] == 40.0 and first["records_per_s"] == 0.1
    assert "of 1000 bytes" in first["event"]
    assert result.new == 5 and status.progress is None  # nothing in progress once it is over


async def test_sources_shows_percent_and_eta_while_pulling(store, autojump_clock, nursery) -> None:
    """While a pull runs, the source's status carries percent and ETA, and `ctdctl sources` prints them."""
    p = plugin("progress")
    status = SourceStatus("slow", p)
    nursery.start_soon(pull_once, "slow", p, Slow(), store, AllowlistRef(), status)
    await trio.sleep(15)
    d = status.as_dict()
    assert d["state"] == "pulling" and d["progress"]["percent"] == 40.0 and d["progress"]["eta_s"] == 22.5
    out = io.StringIO()
    render.sources(out, [d])
    header, row = out.getvalue().splitlines()[:2]
    assert "PROGRESS" in header and "40%" in row and "ETA 22s" in row
    await trio.sleep(30)
    assert status.as_dict()["progress"] is None


def test_progress_without_a_total_shows_counts_only() -> None:
    """With no known size the progress cell shows what was read and the rate, no percent."""
    cell = render.progress_cell(
        {"records": 1200, "records_per_s": 40.0, "bytes_read": 0, "percent": None, "eta_s": None, "pages_read": 3}
    )
    assert cell == "1200 records, 3 pages, 40/s"
