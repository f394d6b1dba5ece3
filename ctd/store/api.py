"""The store's typed API: the only way into the store.

Callers hold a :class:`Store` and call its named methods; each builds one of
the frozen request Structs of :mod:`ctd.store.requests` and hands it to the
backend's ``_execute``. The requests are plain data (no channels, no SQL), so a
backend is one ``match`` over them: :mod:`ctd.store.engine` for SQLite, run in
the store actor's thread behind :class:`ctd.store.actor.StoreClient`; next to
it, later, a PostgreSQL backend (active/standby daemons) subclasses ``Store``
the same way and nothing outside ``ctd/store/`` changes.

Decisions that shape the seam:

* **The stage row** is a plain tuple typed as ``StageRow``, its column order
  written once in ``ctd.store.rows.STAGE_COLUMNS`` and built only by
  ``to_stage_rows``. A ``NamedTuple`` would document itself, but building one
  per ingested IoC measured about twice the cost of a tuple (0.6-0.9 us ->
  1.4-2.1 us per row in ``to_stage_rows``): several percent of an ingest.
* **Rules cross the seam parsed, not compiled.** A :class:`Selection` carries
  the ``Rule`` (filter + exceptions, checked when the config was loaded), the
  moment ``at`` its ``now`` means, and what narrows it (types, sources, loop
  prevention, last seen). The rule compiler's SQL is SQLite's dialect (GLOB,
  ``json_each``, a registered ``ctd_cidr_match``), so a compiled where-clause
  crossing the seam, even as an opaque value, would tie every caller to
  SQLite: only the SQLite backend (``ledger.selection_where``) calls
  ``Rule.sql()``. A PostgreSQL backend compiles the same parsed rule its way.
* **The allowlist crosses as a predicate** ``(type, value) -> bool``: pure,
  no I/O, evaluated by any backend in Python (as ingest already does).
* **Indicator ids** cross only as opaque ledger keys (``fetch_pending`` ->
  ``record_delivery``); callers name indicators by canonical (type, value).
"""

from __future__ import annotations

import abc
import heapq
from collections.abc import Sequence
from typing import Any

import msgspec

from ctd.store.requests import (
    Allowlisted,
    ApplyGuard,
    BackupDatabase,
    ChangeMarks,
    CheckDatabase,
    Checkpoint,
    CompletePull,
    CountBySource,
    CountIndicators,
    CountLedger,
    Expire,
    ExpireStep,
    ExportPage,
    FetchPending,
    FindInList,
    FinishPass,
    GetCheckpoint,
    GetListHash,
    GetMutes,
    GetRejections,
    GetSizes,
    IngestBatch,
    IngestResult,
    ListChunk,
    ListLedger,
    Plan,
    PlanSharing,
    PreviewPart,
    PreviewSelection,
    PreviewTarget,
    ReapplyAllowlist,
    ReapplyPluginValues,
    RecordApplied,
    RecordDelivery,
    RecordFull,
    RecordPullError,
    Resync,
    Retract,
    SearchIndicators,
    Selection,
    SetCheckpoint,
    SetMute,
    ShowIndicators,
    Unretract,
    Warninglisted,
    _Request,
)

# --- the seam ---------------------------------------------------------------------------------


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    queued: int
    handled: int
    busy_seconds: float
    # ``ok``; ``full`` (state_dir has no space: writes fail, reads work); ``damaged`` (the store stopped)
    state: str = "ok"
    problem: str | None = None
    since: float | None = None  # when it entered that state (epoch seconds)


class Store(abc.ABC):
    """What every part of ctd may ask of the store. A backend implements the three abstract methods.

    Each named method is one request and, where it writes, one transaction.
    """

    @abc.abstractmethod
    async def _execute(self, request: _Request) -> Any:
        """Perform one request (a ``match`` over the Structs above) and return its result."""

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """Requests queued and handled, and the time spent on them."""

    @abc.abstractmethod
    def engine_versions(self) -> dict[str, str]:
        """The database engine's name and version, for ``ctdctl version``."""

    # -- sources and checkpoints

    async def ingest(self, batch: IngestBatch) -> IngestResult:
        return await self._execute(batch)

    async def checkpoint(self, source: str) -> Checkpoint:
        return await self._execute(GetCheckpoint(source=source))

    async def set_checkpoint(self, source: str, last_run: int | None) -> None:
        await self._execute(SetCheckpoint(source=source, last_run=last_run))

    async def complete_pull(self, source: str, cycle_start: int, now: int) -> None:
        await self._execute(CompletePull(source=source, cycle_start=cycle_start, now=now))

    async def reapply_plugin_values(
        self, source: str, *, tags: Sequence[str], dropped: Sequence[str], reputation: int | None, now: int
    ) -> int:
        """Apply the source's current tags/reputation to what its current pull cycle committed; how many."""
        return await self._execute(
            ReapplyPluginValues(source=source, tags=tuple(tags), dropped=tuple(dropped), reputation=reputation, now=now)
        )

    async def record_error(self, source: str, error: str) -> None:
        await self._execute(RecordPullError(source=source, error=error))

    async def rejections(self, source: str) -> dict[str, list[dict[str, Any]]]:
        """What ``source`` rejected lately: reason class -> ``{at, where, reason}`` newest first."""
        return await self._execute(GetRejections(source=source))

    # -- housekeeping and operator actions

    async def expire(self, now: int) -> int:
        """Sweep the whole store for expired indicators; how many became inactive.

        In steps of a few tens of milliseconds, each its own request, so an ingest
        or a ``ctdctl`` query waits behind one step, never behind the whole sweep.
        """
        total, after = 0, 0
        while True:
            step: ExpireStep = await self._execute(Expire(now=now, after=after))
            total += step.expired
            if step.resume is None:
                return total
            after = step.resume

    async def reapply_allowlist(self, allowlisted: Allowlisted | None, now: int) -> int:
        """How many indicators flipped."""
        return await self._execute(ReapplyAllowlist(allowlisted=allowlisted, now=now))

    async def apply_guard(
        self, source: str, signature: str, warninglisted: Warninglisted | None, *, tag: bool, now: int
    ) -> int | None:
        """Re-flag ``source``'s reports if its guard changed: how many changed; None if it had not."""
        return await self._execute(
            ApplyGuard(source=source, signature=signature, warninglisted=warninglisted, tag=tag, now=now)
        )

    async def retract(
        self, candidates: Sequence[tuple[str, str]], *, source: str | None, now: int, until: int | None = None
    ) -> int | None:
        """Provenance entries retracted, and held so until ``until`` (None: until lifted); None when none matches."""
        return await self._execute(Retract(candidates=tuple(candidates), source=source, now=now, until=until))

    async def unretract(self, candidates: Sequence[tuple[str, str]], *, source: str | None) -> int | None:
        """Operator retractions lifted; None when no indicator matches."""
        return await self._execute(Unretract(candidates=tuple(candidates), source=source))

    async def set_mute(self, rule: str, until: int) -> None:
        await self._execute(SetMute(rule=rule, until=until))

    async def mutes(self) -> dict[str, int]:
        """Operator mute overrides: rule name -> muted until (0 = unmuted)."""
        return await self._execute(GetMutes())

    # -- reads for ctdctl (JSON-ready, times ISO 8601)

    async def counts(self) -> dict[str, Any]:
        return await self._execute(CountIndicators())

    async def source_counts(self) -> dict[str, int]:
        """Unretracted provenance entries per source name."""
        return await self._execute(CountBySource())

    async def show(self, candidates: Sequence[tuple[str, str]], raw: str) -> list[dict[str, Any]]:
        return await self._execute(ShowIndicators(candidates=tuple(candidates), raw=raw))

    async def search(
        self, *, type_: str | None, source: str | None, active: bool | None, limit: int
    ) -> list[dict[str, Any]]:
        return await self._execute(SearchIndicators(type=type_, source=source, active=active, limit=limit))

    async def export_page(
        self, *, after: int, limit: int, type_: str | None, source: str | None, active: bool | None
    ) -> tuple[list[dict[str, Any]], int]:
        """One page and the key to pass as ``after`` for the next one."""
        return await self._execute(ExportPage(after=after, limit=limit, type=type_, source=source, active=active))

    async def sizes(self) -> dict[str, int]:
        """Bytes on disk (database, WAL, shared memory)."""
        return await self._execute(GetSizes())

    # -- the database file

    async def backup(self, target: str | None, *, keep: int | None = None) -> dict[str, Any]:
        """An online copy at ``target`` (None: ``state_dir/backups``): its path, size and what it holds."""
        return await self._execute(BackupDatabase(target=target, keep=keep))

    async def check(self) -> dict[str, Any]:
        """``ok`` and the problems an integrity check found (none: ``[]``)."""
        return await self._execute(CheckDatabase())

    # -- sharing and the delivery ledger

    async def plan_sharing(self, plan: PlanSharing) -> Plan:
        return await self._execute(plan)

    async def fetch_pending(self, sharing: str, *, retraction: bool, limit: int) -> list[tuple[int, Any]]:
        """``(ledger key, ShareItem)`` pairs to push (or withdraw)."""
        return await self._execute(FetchPending(sharing=sharing, retraction=retraction, limit=limit))

    async def record_delivery(
        self,
        sharing: str,
        *,
        done: Sequence[int],
        rejected: dict[int, str],
        retraction: bool,
        now: int,
        ids: dict[int, str] | None = None,
        expires: dict[int, int | None] | None = None,
        staged: bool = False,
    ) -> None:
        """Record a delivered batch; ``ids``: the destination's ids of what it created, by ledger key;
        ``expires``: the expiry each accepted push carried; ``staged``: it takes effect at the apply step."""
        await self._execute(
            RecordDelivery(
                sharing=sharing,
                done=done,
                rejected=rejected,
                retraction=retraction,
                now=now,
                ids=ids or {},
                expires=expires or {},
                staged=staged,
            )
        )

    async def record_applied(self, sharing: str, *, now: int) -> tuple[int, int]:
        """The destination applied the staged changes: how many became shared and how many retracted."""
        return await self._execute(RecordApplied(sharing=sharing, now=now))

    async def list_hash(self, sharing: str) -> tuple[str | None, str | None]:
        """The hash of the planned full list (None: none planned) and the hash last delivered."""
        return await self._execute(GetListHash(sharing=sharing))

    async def list_chunk(self, sharing: str, *, after: int, limit: int) -> list[tuple[int, int, str | None, Any]]:
        """Up to ``limit`` entries of the planned full list after position ``after`` (0: from the start),
        newest first, as ``(position, ledger key, fingerprint, ShareItem)``; never more than
        ``LIST_CHUNK_MAX``. The whole list is never returned at once."""
        return await self._execute(ListChunk(sharing=sharing, after=after, limit=limit))

    async def find_in_list(self, sharing: str, values: Sequence[str]) -> list[tuple[int, Any]]:
        """``(ledger key, ShareItem)`` of the planned full list's entries with these values."""
        return await self._execute(FindInList(sharing=sharing, values=tuple(values)))

    async def change_marks(self, sources: Sequence[str] | None) -> tuple[tuple[str, int], ...]:
        """The change generations of ``sources`` (None: every source): equal marks, nothing moved."""
        return await self._execute(ChangeMarks(sources=tuple(sources) if sources is not None else None))

    async def record_full(
        self, sharing: str, *, list_hash: str | None, rejected: dict[int, str], now: int, unchanged: bool = False
    ) -> int:
        """How many entries were withdrawn (absent from the delivered list)."""
        return await self._execute(
            RecordFull(sharing=sharing, list_hash=list_hash, rejected=rejected, now=now, unchanged=unchanged)
        )

    async def finish_pass(self, sharing: str, *, now: int, error: str | None) -> None:
        await self._execute(FinishPass(sharing=sharing, now=now, error=error))

    async def resync(self, sharing: str, *, since: int | None) -> int:
        return await self._execute(Resync(sharing=sharing, since=since))

    async def ledger_counts(self, sharing: str) -> dict[str, Any]:
        """Entries per ledger state, and the last run/success/error of the sharing."""
        return await self._execute(CountLedger(sharing=sharing))

    async def ledger_rows(self, sharing: str, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
        return await self._execute(ListLedger(sharing=sharing, states=states, limit=limit))

    async def rule_test(
        self,
        selection: Selection,
        *,
        targets: Sequence[PreviewTarget] = (),
        size: str = "text",
        overhead: int = 1,
        sample: int = 10,
    ) -> dict[str, Any]:
        """Dry run: what ``selection`` holds now, by type, with its serialised size and its newest ``sample``
        entries; and, under ``"targets"``, the same counts (no sample) for each destination it feeds.

        The store is scanned in chunks, one request each, sized to hold it for
        about ``PREVIEW_CHUNK_SECONDS``: what others asked meanwhile (an ingest
        batch) runs between two chunks instead of after the whole dry run. The
        result is therefore not one snapshot: a change committed during the dry
        run may or may not be counted, as if it had come a moment earlier or later.
        """
        counts: dict[str, tuple[int, int]] = {}
        per_target: list[dict[str, tuple[int, int]]] = [{} for _ in targets]
        newest: list[tuple[int | None, int, str, str]] = []
        after, end, span = 0, None, PREVIEW_FIRST_SPAN
        while True:
            part: PreviewPart = await self._execute(
                PreviewSelection(
                    selection=selection,
                    targets=tuple(targets),
                    size=size,
                    overhead=overhead,
                    sample=sample,
                    newer_than=newest[-1][:2] if sample and len(newest) == sample else None,
                    after=after,
                    span=span,
                    end=end,
                )
            )
            _merge(counts, part.selection)
            for into, got in zip(per_target, part.targets, strict=True):
                _merge(into, got)
            if part.sample:
                newest = heapq.nlargest(sample, [*newest, *part.sample], key=_recency)
            if part.after >= part.end:
                break
            after, end, span = part.after, part.end, next_span(span, part.seconds)
        out = _summary(counts)
        out["sample"] = [{"type": t, "value": v} for _, _, t, v in newest]
        out["targets"] = [_summary(c) for c in per_target]
        return out


# Each dry-run request should hold the store for about this long (an ingest batch
# waiting behind it waits at most that); the first chunk is small, the next
# ones are sized from how long the previous one took.
PREVIEW_CHUNK_SECONDS = 0.015
PREVIEW_FIRST_SPAN = 8192
PREVIEW_MIN_SPAN = 256
PREVIEW_MAX_SPAN = 1 << 20


def next_span(span: int, seconds: float) -> int:
    """The next chunk's size in keys, aiming at ``PREVIEW_CHUNK_SECONDS``; it at most doubles from one to the next."""
    scale = min(2.0, PREVIEW_CHUNK_SECONDS / max(seconds, 1e-6))
    return max(PREVIEW_MIN_SPAN, min(PREVIEW_MAX_SPAN, int(span * scale)))


def _recency(entry: tuple[int | None, int, str, str]) -> tuple[bool, int, int]:
    """Newest first as SQL orders ``last_seen DESC, id DESC``: an unknown last_seen sorts oldest."""
    last_seen, key = entry[0], entry[1]
    return (last_seen is not None, last_seen or 0, key)


def _merge(into: dict[str, tuple[int, int]], got: dict[str, tuple[int, int]]) -> None:
    for typ, (n, size) in got.items():
        had_n, had_size = into.get(typ, (0, 0))
        into[typ] = (had_n + n, had_size + size)


def _summary(counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """``total``, ``by_type`` (sorted by type, types with entries only) and ``bytes``."""
    by_type = {t: counts[t][0] for t in sorted(counts) if counts[t][0]}
    return {"total": sum(by_type.values()), "by_type": by_type, "bytes": sum(b for _, b in counts.values())}
