"""Deliver a full-replace list, streamed from the store to the destination (issue 14).

The plan numbered the list newest first in the store. This reads it back a
chunk at a time (``Store.list_chunk``: each read is short, so ingest and
``ctdctl`` are served between chunks), hashes it and hands each chunk to the
adapter's ``ListWriter`` as it goes: a list file grows in its temporary file,
a destination that cannot stream collects the list (``CollectedList``). At the
end the hash decides: the same list as last delivered while the target still
holds it is discarded (nothing is sent, the file is not touched); otherwise
the writer commits (the temporary file is renamed over the list), the apply
step runs if the destination needs one, and only then does the ledger record
the list, in one transaction. Memory holds one chunk, never the list.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import TYPE_CHECKING

import structlog
import trio

from ctd.errors import cap
from ctd.model import ListWriter, ShareItem, now
from ctd.policy import deadline
from ctd.store import Plan
from ctd.store.requests import list_hash_entry

if TYPE_CHECKING:
    from ctd.sharing.actor import Sharer, ShareResult

log = structlog.get_logger("ctd.sharing")

CHUNK = 5_000  # entries per store read and per ``ListWriter.write``
DISCARD_TIMEOUT = 30.0  # removing a temporary file, even while the pass is cancelled
_SAMPLE = 1000  # values kept for the debug audit line


class _Tally:
    """What a streamed delivery keeps for the audit: counts by type, a sample, the refusals."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.sample: list[str] = []
        self.total = 0
        self.rejected: dict[int, str] = {}  # ledger key -> reason
        self.refused: list[ShareItem] = []
        self.reasons: dict[str, str] = {}

    def add(self, batch: list[tuple[int, ShareItem]], refused: dict[str, str]) -> None:
        self.total += len(batch)
        for iid, it in batch:
            reason = refused.get(it.value)
            if reason is None:
                self.by_type[it.type] += 1
                if len(self.sample) < _SAMPLE:
                    self.sample.append(it.value)
            else:
                self.refuse(iid, it, reason, counted=False)

    def refuse(self, iid: int, it: ShareItem, reason: str, *, counted: bool = True) -> None:
        """``iid`` was refused (``counted``: after it was counted as shared, at commit)."""
        if iid in self.rejected:
            return
        self.rejected[iid] = cap(reason)
        if counted:
            self.by_type[it.type] -= 1
        if len(self.refused) < _SAMPLE:
            self.refused.append(it)
            self.reasons[it.value] = reason


async def deliver_full(sharer: Sharer, result: ShareResult, plan: Plan) -> None:
    """Stream the planned list to the destination (unless unchanged), then record it in the ledger."""
    sh, adapter, timeout = sharer.sh, sharer.adapter, float(sharer.dest.timeout)
    present = adapter.target_present(sh.action, sh.params)  # a lost list is delivered again
    with deadline(timeout, "open_list"):
        writer = await adapter.open_list(sh.action, sh.params)
    tally = _Tally()
    try:
        digest = await _stream(sharer, writer, tally)
        if digest == plan.last_hash and present:
            result.unchanged = True
            await _discard(writer)
        else:
            with deadline(timeout, "commit"):
                res = await writer.commit()
            if res.rejected:  # refusals a destination reports only once it had the whole list
                for iid, it in await sharer.store.find_in_list(sharer.name, list(res.rejected)):
                    tally.refuse(iid, it, res.rejected[it.value])
            if sharer.spec.needs_apply:
                # Before the ledger records the list: an apply that fails or is cut short leaves
                # the list hash unrecorded, so the next pass replaces (idempotent) and applies again.
                await sharer._apply(result)
    except BaseException:
        await _discard(writer)
        raise
    if not result.unchanged:
        result.pushed = tally.total - len(tally.rejected)
        result.rejected = len(tally.rejected)
        if sharer.rate is not None:
            sharer.rate.add(result.pushed)
        sharer._audit_counts("indicators_shared", tally.by_type, tally.sample)
        sharer._refused(tally.refused, tally.reasons, count=len(tally.rejected))
    result.retracted = await sharer.store.record_full(
        sharer.name,
        list_hash=digest,
        rejected=tally.rejected if not result.unchanged else {},
        now=now(),
        unchanged=result.unchanged,
    )


async def _stream(sharer: Sharer, writer: ListWriter, tally: _Tally) -> str:
    """Read the list chunk by chunk, hash it and write it; the list's hash."""
    h = hashlib.sha256()
    after = 0
    while True:
        rows = await sharer.store.list_chunk(sharer.name, after=after, limit=CHUNK)
        if not rows:
            return h.hexdigest()
        after = rows[-1][0]
        batch = []
        for _, iid, fp, it in rows:
            h.update(list_hash_entry(it.type, it.value, fp))
            batch.append((iid, it))
        with deadline(float(sharer.dest.timeout), "write"):
            refused = await writer.write([it for _, it in batch])
        tally.add(batch, refused)


async def _discard(writer: ListWriter) -> None:
    """Drop what the writer holds (a temporary file), also when the pass is being cancelled."""
    with trio.CancelScope(shield=True), trio.move_on_after(DISCARD_TIMEOUT):
        try:
            await writer.discard()
        except Exception as exc:  # the pass's own error (or its success) is what the caller reports
            log.warning("could not discard a list not delivered", ctd_event="list_discard_failed", error=str(exc))
