"""The store's requests and results: plain, frozen data, defined once.

Each request is one call of the :class:`ctd.store.api.Store` API and, where it
writes, one transaction. They hold no channels, no callables to run and no
SQL, so any backend can take them (see ``ctd/store/api.py`` for the seam).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from ctd.rules.compiler import Rule
from ctd.store.rows import StageRow

Allowlisted = Callable[[str, str], bool]  # (type, value) -> on the allowlist; pure, no I/O
Warninglisted = Callable[[str, str], str | None]  # (type, value) -> the warning list it hits; pure, no I/O


class _Request(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every store request: plain data, answered by one backend call."""


# --- sources and checkpoints -------------------------------------------------------------


# What a source rejected, as the store keeps it: (reason class, where, reason). ``ctd.model.Rejected``
# flattened; at most KEEP_REJECTED per class are kept per source (the newest).
RejectedRow = tuple[str, str, str]
KEEP_REJECTED = 100


class IngestBatch(_Request, frozen=True, kw_only=True):
    """Merge one batch from ``source`` and commit it together with its resume point."""

    source: str
    rows: Sequence[StageRow]
    policy: str  # which re-report of the same source replaces its metadata (reconcile)
    aging_days: int
    now: int  # when the source reported these to ctd: a row without its own expiry expires now + aging_days
    fresh: bool  # the first batch of a pull that did not resume: a new snapshot generation
    snapshot_end: bool  # retract what this source did not report since the snapshot began
    sub: dict | None  # the resume point after this batch (None: the pull is complete)
    cursor: dict | None  # the adapter's durable state (None: keep the stored one)
    rejected: Sequence[RejectedRow] = ()  # what this batch rejected: kept per source (rejections.keep)


class GetRejections(_Request, frozen=True, kw_only=True):
    """The records ``source`` rejected lately, by reason class (newest first)."""

    source: str


class GetCheckpoint(_Request, frozen=True, kw_only=True):
    source: str


class SetCheckpoint(_Request, frozen=True, kw_only=True):
    """Operator override of "last run" (re-pull history): also drops any resume point."""

    source: str
    last_run: int | None


class CompletePull(_Request, frozen=True, kw_only=True):
    """A pull cycle finished: its start becomes the checkpoint; the resume point is cleared."""

    source: str
    cycle_start: int
    now: int


class ReapplyPluginValues(_Request, frozen=True, kw_only=True):
    """Apply a source's current plugin-level values to every sighting its current pull cycle committed.

    ``dropped``: plugin tags used earlier in the cycle that are no longer configured;
    ``reputation`` None leaves each sighting's reputation as it is.
    """

    source: str
    tags: tuple[str, ...]
    dropped: tuple[str, ...]
    reputation: int | None
    now: int


class RecordPullError(_Request, frozen=True, kw_only=True):
    source: str
    error: str


# --- housekeeping and operator actions ----------------------------------------------------


class Expire(_Request, frozen=True, kw_only=True):
    """One step of an expiry sweep: mark inactive the indicators after id ``after`` whose every source
    entry has expired, for at most a few tens of milliseconds (``ExpireStep`` says where to go on)."""

    now: int
    after: int = 0


class ExpireStep(msgspec.Struct, frozen=True, kw_only=True):
    """What one step of a sweep did: how many expired, and the id to resume after (None: swept to the end)."""

    expired: int
    resume: int | None


class ReapplyAllowlist(_Request, frozen=True, kw_only=True):
    """Re-evaluate every indicator against a changed allowlist."""

    allowlisted: Allowlisted | None
    now: int


class ApplyGuard(_Request, frozen=True, kw_only=True):
    """Re-flag a source's stored reports when its warning-list guard (``signature``) changed."""

    source: str
    signature: str  # "off", or the lists with their versions and the action (ctd.guard)
    warninglisted: Warninglisted | None
    tag: bool  # warninglist_action = "tag": hits are tagged and stay active
    now: int


class Retract(_Request, frozen=True, kw_only=True):
    """Retract the indicator matching any canonical (type, value) candidate, for one source or all."""

    candidates: Sequence[tuple[str, str]]
    source: str | None
    now: int
    until: int | None = None  # the operator's retraction stands until then (None: until lifted)


class Unretract(_Request, frozen=True, kw_only=True):
    """Lift the operator's retraction of the matching indicator (of one source, or every hold)."""

    candidates: Sequence[tuple[str, str]]
    source: str | None


class SetMute(_Request, frozen=True, kw_only=True):
    rule: str
    until: int  # epoch seconds; 0 = unmuted


class GetMutes(_Request, frozen=True, kw_only=True):
    pass


# --- reads for ctdctl -------------------------------------------------------------------------


class CountIndicators(_Request, frozen=True, kw_only=True):
    pass


class CountBySource(_Request, frozen=True, kw_only=True):
    pass


class ShowIndicators(_Request, frozen=True, kw_only=True):
    """Indicators matching any canonical candidate, or the raw value as typed."""

    candidates: Sequence[tuple[str, str]]
    raw: str


class SearchIndicators(_Request, frozen=True, kw_only=True):
    type: str | None
    source: str | None
    active: bool | None
    limit: int


class ExportPage(_Request, frozen=True, kw_only=True):
    """One page of the export in id order, after the key ``after``."""

    after: int
    limit: int
    type: str | None
    source: str | None
    active: bool | None


class GetSizes(_Request, frozen=True, kw_only=True):
    pass


# --- the database file: backups and checks (beside the writer, on a read connection) -----------


class BackupDatabase(_Request, frozen=True, kw_only=True):
    """Copy the database online to ``target`` (None: ``state_dir/backups``); keep only the ``keep`` newest there."""

    target: str | None = None
    keep: int | None = None


class CheckDatabase(_Request, frozen=True, kw_only=True):
    """``PRAGMA integrity_check``, and the maintained counters against a recount."""


# --- sharing and the delivery ledger ----------------------------------------------------------


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Which active indicators: a rule and what narrows it, for the backend to query its own way."""

    rule: Rule
    at: int  # what ``now`` means in the rule's time expressions
    types: tuple[str, ...] | None = None  # only these indicator types (a destination action's)
    sources: tuple[str, ...] | None = None  # live (unretracted) from at least one of these sources
    not_from: str | None = None  # loop prevention: never reported by this plugin itself
    seen_since: int | None = None  # last_seen at or after this time


class PlanSharing(_Request, frozen=True, kw_only=True):
    """Select what the destination should hold now and bring the ledger to it (one transaction)."""

    sharing: str
    selection: Selection
    size: str  # how an entry's size is counted: "text" or "json"
    overhead: int  # bytes per entry on top of the value
    max_entries: int | None
    max_bytes: int | None
    incremental: bool
    now: int
    # The destination enforces the expiry it is given: a shared IoC whose expiry moved later is
    # pushed again once the destination's copy has used up half of the lifetime ctd now gives it.
    expiry: bool = False


class FetchPending(_Request, frozen=True, kw_only=True):
    """Up to ``limit`` ledger rows waiting for a push (or a withdrawal), newest first."""

    sharing: str
    retraction: bool
    limit: int


class RecordDelivery(_Request, frozen=True, kw_only=True):
    """A delivered batch: accepted rows become shared (or retracted), refused ones failed.

    ``ids``: the destination's ids of what was created, by ledger key (``PushResult.ids``).
    """

    sharing: str
    done: Sequence[int]
    rejected: dict[int, str]
    retraction: bool
    now: int
    ids: dict[int, str] = {}
    # The expiry each accepted push carried (by ledger key), kept to push a later one in time.
    expires: dict[int, int | None] = {}
    # The destination needs an apply step: accepted rows are staged and the sharing owes an
    # apply (committed together); they become shared/retracted at ``RecordApplied``.
    staged: bool = False


class RecordApplied(_Request, frozen=True, kw_only=True):
    """The destination's apply step succeeded: staged rows become shared or retracted, the marker is cleared."""

    sharing: str
    now: int


class GetListHash(_Request, frozen=True, kw_only=True):
    sharing: str


# The most entries one ``ListChunk`` returns, whatever it asks for: a full list never crosses whole.
LIST_CHUNK_MAX = 10_000


def list_hash_entry(type_: str, value: str, fp: str | None) -> bytes:
    """What one entry of a full list adds to the list's hash (SHA-256 over the entries in list
    order): a list whose entries, order and fingerprints are the same is unchanged."""
    return f"{type_}\x1f{value}\x1f{fp}\x1e".encode()


class ListChunk(_Request, frozen=True, kw_only=True):
    """Up to ``limit`` entries of the planned full list after position ``after`` (``ctd.store.fulllist``)."""

    sharing: str
    after: int
    limit: int


class FindInList(_Request, frozen=True, kw_only=True):
    """The entries of the planned full list with these values (refusals a destination reports by value)."""

    sharing: str
    values: tuple[str, ...]


class ChangeMarks(_Request, frozen=True, kw_only=True):
    """The change generations of these sources (None: of every source), by name (``ctd.store.changes``)."""

    sources: tuple[str, ...] | None


class RecordFull(_Request, frozen=True, kw_only=True):
    """The full list was delivered (or was unchanged): bring the ledger to the planned state."""

    sharing: str
    list_hash: str | None
    rejected: dict[int, str]
    now: int
    unchanged: bool = False


class FinishPass(_Request, frozen=True, kw_only=True):
    sharing: str
    now: int
    error: str | None


class Resync(_Request, frozen=True, kw_only=True):
    """Mark delivered IoCs last seen since ``since`` (None: all) to be pushed again."""

    sharing: str
    since: int | None


class CountLedger(_Request, frozen=True, kw_only=True):
    sharing: str


class ListLedger(_Request, frozen=True, kw_only=True):
    sharing: str
    states: tuple[str, ...]
    limit: int


class PreviewTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A destination a dry run sizes: what narrows the rule's selection for it, and how it counts bytes.

    Its selection is the dry run's ``Selection`` further narrowed by these fields
    (the same meaning as there); an entry counts ``size`` bytes plus ``overhead``.
    """

    types: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    not_from: str | None = None
    size: str = "text"
    overhead: int = 1


class PreviewSelection(_Request, frozen=True, kw_only=True):
    """Dry run of one chunk of the store: the indicators keyed in ``(after, after + span]`` (never past ``end``).

    What ``selection`` holds there, by type, with its serialised size and its
    newest ``sample`` entries; and the same counts for each of ``targets``.
    ``end`` is the last key to look at (None: the store's last key now, which
    the answer carries so the next chunks stop there). ``newer_than`` is the
    oldest (last seen, key) of the sample the earlier chunks made: a chunk
    with nothing newer contributes none.
    """

    selection: Selection
    targets: tuple[PreviewTarget, ...] = ()
    size: str = "text"
    overhead: int = 1
    sample: int = 10
    newer_than: tuple[int | None, int] | None = None  # the sample needs only entries newer than this one
    after: int = 0
    span: int = 1 << 62
    end: int | None = None


# --- results ---------------------------------------------------------------------------------


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    new: int
    updated: int
    retracted: int
    held: int = 0  # re-reports of values an operator retracted, kept retracted
    held_examples: tuple[str, ...] = ()  # a few of them, "type:value"


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a source's next pull starts."""

    last_run: int | None = None  # start of the last completed pull cycle
    cursor: dict | None = None  # the adapter's durable state
    sub: dict | None = None  # resume point of a half-done pull
    last_success: int | None = None
    last_error: str | None = None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A planned pass: how many IoCs the selection holds, and how many of them a destination limit leaves out."""

    candidates: int
    over_limit: int
    apply_pending: bool = False  # an earlier pass left changes the destination has not applied yet
    # An expiry-enforcing destination: when the first copy there is due to be pushed again
    # (None: none is), so a pass with nothing else changed is not skipped past it.
    recheck_at: int | None = None
    last_hash: str | None = None  # full-replace: the hash of the list last delivered


class PreviewPart(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of a dry run: the counts of the selection and of each target, and its newest entries."""

    selection: dict[str, tuple[int, int]]  # type -> (entries, bytes)
    targets: tuple[dict[str, tuple[int, int]], ...]  # the same, per PreviewTarget
    sample: tuple[tuple[int | None, int, str, str], ...]  # (last_seen, key, type, value), newest first
    after: int  # the last key this chunk covered: where the next one starts
    end: int  # the last key of the whole dry run
    seconds: float  # how long the chunk held the store
