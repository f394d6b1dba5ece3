"""Progress of a running pull: a line every ``INTERVAL`` seconds, and what ``ctdctl sources``/``sync`` show.

The adapter fills the context's :class:`ctd.model.PullProgress` (bytes, pages and
their totals when known), the source actor counts records; this module turns
it into rates, a percentage and an ETA. Nothing here reads the clock but
``trio.current_time``, so tests drive it with a MockClock.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
import trio

from ctd.model import PullProgress

log = structlog.get_logger("ctd.source")

INTERVAL: Final = 10.0  # seconds between progress lines of a long pull


def describe(progress: PullProgress, started: float, now: float) -> dict[str, Any]:
    """Counts, rates, percent and ETA (None when no total is known) of a pull running since ``started``."""
    elapsed = max(now - started, 1e-9)
    fraction = progress.fraction()
    eta = None
    if fraction is not None and fraction > 0:
        eta = round(elapsed * (1 - fraction) / fraction, 1)
    return {
        "elapsed_s": round(elapsed, 1),
        "records": progress.records,
        "records_per_s": round(progress.records / elapsed, 1),
        "bytes_read": progress.bytes_read,
        "bytes_total": progress.bytes_total,
        "bytes_per_s": round(progress.bytes_read / elapsed, 1),
        "pages_read": progress.pages_read,
        "pages_total": progress.pages_total,
        "percent": round(100 * fraction, 1) if fraction is not None else None,
        "eta_s": eta,
    }


async def report(progress: PullProgress, started: float, interval: float = INTERVAL) -> None:
    """Log ``source_pull_progress`` every ``interval`` seconds until cancelled (the pull's end)."""
    while True:
        await trio.sleep(interval)
        d = describe(progress, started, trio.current_time())
        of = f" of {d['bytes_total']} bytes" if d["bytes_total"] else ""
        log.info(
            f"pull in progress: {d['records']} records, {d['bytes_read']} bytes{of} read",
            ctd_event="source_pull_progress",
            ctd_count=d["records"],
            **{k: v for k, v in d.items() if v is not None and k != "records"},
        )
