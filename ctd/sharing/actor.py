"""Sharing actor: one per sharing configuration.

A pass plans what the destination should hold now (rule, sources, loop
prevention, limits), then delivers: withdrawals and new or changed IoCs in
batches for incremental destinations, or the whole list (only when it changed)
for full-replace ones. Passes run every ``interval`` and whenever the store
commits changes from a source this configuration reads; wake-ups that arrive
during a pass coalesce into one more pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

import msgspec
import outcome
import structlog
import trio

from ctd.ask import Ask, answer, close_inbox
from ctd.config import PluginConfig, RuleConfig, SharingConfig
from ctd.errors import StoreError, cap, describe
from ctd.model import ActionSpec, Adapter, PushResult, ShareItem, iso, now
from ctd.policy import deadline, expected, next_attempt, real_cause
from ctd.rates import RateCounter
from ctd.rules.compiler import Rule
from ctd.sharing.fulllist import deliver_full
from ctd.store import PlanSharing, Selection, Store

log = structlog.get_logger("ctd.sharing")


class Wake(msgspec.Struct, frozen=True):
    """The store committed changes this sharing may care about."""


class ShareNow(msgspec.Struct, frozen=True, kw_only=True):
    """Ask for a pass now (after marking IoCs seen in the last ``days`` for re-sharing if ``resync``)."""

    days: int | None = None
    resync: bool = False


class ShareResult(msgspec.Struct, kw_only=True):
    sharing: str
    candidates: int = 0
    pushed: int = 0
    rejected: int = 0
    retracted: int = 0
    unshared: int = 0
    unchanged: bool = False
    muted: bool = False
    applied: bool = False  # the destination's apply step ran (Netskope's deploy)
    error: str | None = None
    # Not run: the destination is in backoff (``error`` is the failure that started it) and
    # no request goes out before ``next_attempt`` (ISO 8601), whatever asks for a pass.
    deferred: bool = False
    next_attempt: str | None = None


class SharingStatus:
    def __init__(self, name: str, sh: SharingConfig) -> None:
        self.name = name
        self.sh = sh
        self.state = "idle"
        self.last_run: int | None = None
        self.last_success: int | None = None
        self.last_error: str | None = None
        self.next_run: int | None = None
        self.last_result: ShareResult | None = None
        self.failures = 0
        self.muted = False
        # Since this actor started (metrics: counters): pushed, retracted, rejected; failed passes by error class.
        self.totals = {"pushed": 0, "retracted": 0, "rejected": 0}
        self.errors: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": self.sh.sources,
            "rule": self.sh.rule,
            "destination": self.sh.destination,
            "action": self.sh.action,
            "state": self.state,
            "last_run": iso(self.last_run),
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "next_run": iso(self.next_run),
            "last_result": msgspec.structs.asdict(self.last_result) if self.last_result else None,
        }


def muted(rule: RuleConfig, at: int, override: int | None = None) -> bool:
    """Is the rule paused at ``at``? An operator override (``ctdctl rules mute``) wins over the config."""
    if override is not None:
        return override > at
    if rule.muted_until is None:
        return False
    until = rule.muted_until
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return until.timestamp() > at


class Sharer:
    """Everything one sharing configuration needs for a pass."""

    def __init__(
        self,
        name: str,
        sh: SharingConfig,
        rule: RuleConfig,
        dest: PluginConfig,
        adapter: Adapter,
        store: Store,
        *,
        mutes: dict[str, int] | None = None,
        rate: RateCounter | None = None,
    ) -> None:
        self.name = name
        self.mutes = mutes if mutes is not None else {}
        self.rate = rate
        self.sh = sh
        self.rule_cfg = rule
        self.rule = Rule(rule.filter, rule.exceptions)
        self.dest = dest
        self.adapter = adapter
        self.store = store
        self.spec: ActionSpec = adapter.ACTIONS[sh.action]
        self.max_entries, self.max_bytes = adapter.limits(sh.action, sh.params)
        self.max_entries = _min(self.max_entries, self.spec.max_entries)
        self.max_bytes = _min(self.max_bytes, self.spec.max_bytes)
        self.recovered = False  # the adapter's recover() ran for this target
        # Skipping passes with nothing to do (ctd.store.changes): what the last successful pass
        # saw, when it must look again anyway (an expiry-enforcing destination's re-push), and
        # what it found (reported again by a skipped pass).
        self.quiet: tuple[Any, ...] | None = None
        self.recheck_at: int | None = None
        self.last_plan = (0, 0)

    def forget(self) -> None:
        """The next pass plans whatever the change marks say (the ledger was changed from outside)."""
        self.quiet = None

    async def _quiet_key(self) -> tuple[Any, ...] | None:
        """What a pass depends on besides the clock, or None if it must plan anyway.

        The change marks of its sources and of its destination (loop prevention
        reads the destination's own reports); of every source when the rule
        tests ``source``. A rule with times relative to ``now`` selects
        differently as time passes: it always plans.
        """
        if self.rule.uses_now:
            return None
        watched = None if self.rule.names_sources else (*self.sh.sources, self.sh.destination)
        marks = await self.store.change_marks(watched)
        return (marks, self.mutes.get(self.sh.rule))

    def selection(self, at: int, *, seen_since: int | None = None) -> Selection:
        """What this sharing sends at ``at``: the rule's matches of the action's types, from its
        sources, never back to the destination that reported them."""
        types = tuple(self.spec.types) if self.spec.types is not None else None
        return Selection(
            rule=self.rule,
            at=at,
            types=types,
            sources=tuple(self.sh.sources),
            not_from=self.sh.destination,
            seen_since=seen_since,
        )

    async def share_once(self) -> ShareResult:
        """Plan and deliver one pass; raises the destination's error (nothing marked shared then)."""
        if not self.recovered:
            with deadline(float(self.dest.timeout), "recover"):
                removed = await self.adapter.recover(self.sh.action, self.sh.params)
            if removed:
                log.warning(
                    "removed what an interrupted delivery left behind",
                    ctd_event="sharing_recovered",
                    ctd_destination=self.sh.destination,
                    ctd_count=len(removed),
                    paths=removed[:10],
                )
            self.recovered = True
        at = now()
        result = ShareResult(sharing=self.name)
        if muted(self.rule_cfg, at, self.mutes.get(self.sh.rule)):
            result.muted = True
            return result
        key = await self._quiet_key()
        if (
            key is not None
            and key == self.quiet
            and (self.recheck_at is None or at < self.recheck_at)
            # a full list whose target is gone is delivered again
            and (self.spec.mode != "full" or self.adapter.target_present(self.sh.action, self.sh.params))
        ):
            # Nothing it depends on moved since the last successful pass: same plan, nothing to send.
            result.candidates, result.unshared = self.last_plan
            result.unchanged = True
            return result
        self.quiet = None  # until this pass succeeds
        incremental = self.spec.mode == "incremental"
        plan = await self.store.plan_sharing(
            PlanSharing(
                sharing=self.name,
                selection=self.selection(at),
                size=self.spec.size,
                overhead=self.spec.entry_overhead,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                incremental=incremental,
                now=at,
                expiry=self.spec.carries_expiry,
            )
        )
        result.candidates, result.unshared = plan.candidates, plan.over_limit
        if plan.over_limit:
            log.warning(
                "destination limit reached: oldest IoCs not shared",
                ctd_event="indicators_unshared",
                ctd_sharing=self.name,
                ctd_count=plan.over_limit,
            )
        if incremental:
            staged = await self._deliver(result, retraction=True)
            staged |= await self._deliver(result, retraction=False)
            if self.spec.needs_apply and (staged or plan.apply_pending):
                await self._apply(result)  # once per pass, also for what an earlier pass left unapplied
        else:
            await deliver_full(self, result, plan)
        await self.store.finish_pass(self.name, now=now(), error=None)
        self.quiet, self.recheck_at, self.last_plan = key, plan.recheck_at, (plan.candidates, plan.over_limit)
        return result

    async def _call(
        self, method: Callable[[str, Any, list[ShareItem]], Awaitable[PushResult]], items: list[ShareItem]
    ) -> PushResult:
        """One call of the destination (``push``, ``retract`` or ``replace``) under the plugin's timeout."""
        with deadline(float(self.dest.timeout), method.__name__):
            return await method(self.sh.action, self.sh.params, items)

    async def _apply(self, result: ShareResult) -> None:
        """The destination's apply step, then the staged rows become shared or retracted."""
        with deadline(float(self.dest.timeout), "apply"):
            await self.adapter.apply(self.sh.action, self.sh.params)
        result.applied = True
        if self.spec.mode == "incremental":
            shared, withdrawn = await self.store.record_applied(self.name, now=now())
            log.info(
                "destination applied the changes",
                ctd_event="sharing_applied",
                ctd_destination=self.sh.destination,
                ctd_count=shared + withdrawn,
                shared=shared,
                retracted=withdrawn,
            )

    async def _deliver(self, result: ShareResult, *, retraction: bool) -> bool:
        """Deliver every pending row (or withdrawal) in batches; whether anything was staged for apply."""
        staged = False
        while True:
            batch = await self.store.fetch_pending(self.name, retraction=retraction, limit=self.spec.batch_size)
            if not batch:
                return staged
            items = [it for _, it in batch]
            res = await self._call(self.adapter.retract if retraction else self.adapter.push, items)
            by_value = {it.value: iid for iid, it in batch}
            rejected = {by_value[v]: cap(reason) for v, reason in res.rejected.items() if v in by_value}
            done = [iid for iid, _ in batch if iid not in rejected]
            ids = {by_value[v]: rid for v, rid in res.ids.items() if v in by_value}
            expires = {}
            if not retraction:  # what the destination's copy will lapse at, as far as ctd knows
                expires = {iid: res.expires.get(it.value, it.expires_at) for iid, it in batch if iid not in rejected}
            staged = staged or self.spec.needs_apply
            await self.store.record_delivery(
                self.name,
                done=done,
                rejected=rejected,
                retraction=retraction,
                now=now(),
                ids=ids,
                expires=expires,
                staged=self.spec.needs_apply,
            )
            ok_items = [it for iid, it in batch if iid not in rejected]
            bad_items = [it for iid, it in batch if iid in rejected]
            if retraction:
                result.retracted += len(done)
                self._audit("indicators_retracted", ok_items)
            else:
                result.pushed += len(done)
                if self.rate is not None:
                    self.rate.add(len(done))
                self._audit("indicators_shared", ok_items)
            result.rejected += len(rejected)
            self._refused(bad_items, res.rejected)

    def _refused(self, items: list[ShareItem], reasons: dict[str, str], count: int | None = None) -> None:
        """Audit what the destination refused, and warn once per delivery with a few (short) reasons.

        ``count``: how many were refused when ``items`` is only a sample of them.
        """
        if not items:
            return
        self._audit("indicators_rejected", items, reasons={it.value: reasons.get(it.value) for it in items[:1000]})
        log.warning(
            "destination refused indicators",
            ctd_event="indicators_refused",
            ctd_sharing=self.name,
            ctd_destination=self.sh.destination,
            ctd_count=count if count is not None else len(items),
            examples=[_short(reasons.get(it.value, "")) for it in items[:5]],
        )

    def _audit(self, event: str, items: list[ShareItem], reasons: dict[str, str | None] | None = None) -> None:
        if not items:
            return
        self._audit_counts(event, Counter(it.type for it in items), [it.value for it in items[:1000]], reasons)

    def _audit_counts(
        self,
        event: str,
        by_type: Counter[str],
        values: list[str],
        reasons: dict[str, str | None] | None = None,
    ) -> None:
        """One audit line per indicator type, and the values (a sample) at debug level."""
        for typ, n in sorted(by_type.items()):
            if n <= 0:
                continue
            log.info(
                event.replace("_", " "),
                ctd_event=event,
                ctd_sharing=self.name,
                ctd_destination=self.sh.destination,
                ctd_rule=self.sh.rule,
                ctd_indicator_type=typ,
                ctd_count=n,
            )
        log.debug(
            event.replace("_", " ") + " (values)",
            ctd_event=event + "_values",
            ctd_sharing=self.name,
            values=values,
            reasons=reasons,
        )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


async def run_sharing(
    sharer: Sharer,
    status: SharingStatus,
    inbox: trio.MemoryReceiveChannel[Wake | Ask],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Share on schedule, on wake-ups and on request (``Ask(ShareNow())``) until cancelled.

    After a failed pass the backoff (and a destination's ``Retry-After``) is a
    floor: no request goes to the destination before it ends, whatever wakes
    the actor. A wake-up then only makes the pass at the end of the backoff
    cover it; a ``ShareNow`` is answered at once with the backoff state and the
    time of the next attempt (its re-share marks are kept for that attempt).
    """
    structlog.contextvars.bind_contextvars(ctd_sharing=sharer.name)
    interval = float(sharer.sh.interval)
    delay = 0.0  # a new configuration shares the existing matching IoCs at once
    not_before: float | None = None  # trio time the backoff ends (None: not in backoff)
    was_muted = False
    task_status.started()
    try:
        while True:
            status.next_run = now() + int(delay) if delay != float("inf") else None
            msgs: list[Wake | Ask] = []
            requests: list[Ask] = []
            try:
                with trio.move_on_after(delay):
                    msgs.append(await inbox.receive())
                while True:  # coalesce everything already queued into this pass
                    try:
                        msgs.append(inbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                requests = [m for m in msgs if isinstance(m, Ask)]
                if not_before is not None and trio.current_time() < not_before:
                    await _defer(sharer, status, requests)
                    delay = not_before - trio.current_time()
                    continue
                result, delay = await _pass(sharer, status, requests, interval)
                not_before = trio.current_time() + delay if status.state == "backoff" else None
                if result.muted != was_muted:
                    log.info(
                        "rule muted" if result.muted else "rule unmuted",
                        ctd_event="rule_muted" if result.muted else "rule_unmuted",
                        ctd_rule=sharer.sh.rule,
                    )
                    was_muted = result.muted
                if status.state == "sharing":
                    status.state = "muted" if result.muted else "idle"
                status.last_result = result
                for k in status.totals:
                    status.totals[k] += getattr(result, k)
                for req in requests:
                    answer(req.reply, outcome.Value(result))
            finally:
                for req in requests:
                    req.reply.close()  # cancelled mid-pass: the askers get an error, not a hang
    finally:
        close_inbox(inbox)


async def _defer(sharer: Sharer, status: SharingStatus, requests: list[Ask]) -> None:
    """Answer requests that arrive during backoff without calling the destination."""
    await _resync(sharer, requests)  # kept for the attempt at the end of the backoff
    result = ShareResult(sharing=sharer.name, error=status.last_error, deferred=True, next_attempt=iso(status.next_run))
    for req in requests:
        answer(req.reply, outcome.Value(result))


async def _resync(sharer: Sharer, requests: list[Ask]) -> None:
    for req in requests:
        share: ShareNow = req.request
        if share.resync:
            since = now() - share.days * 86400 if share.days else None
            sharer.forget()
            await sharer.store.resync(sharer.name, since=since)


async def _pass(
    sharer: Sharer, status: SharingStatus, requests: list[Ask], interval: float
) -> tuple[ShareResult, float]:
    """One pass (after the re-sharing the requests ask for): its result and the delay before the next."""
    status.state = "sharing"
    status.last_run = now()
    try:
        await _resync(sharer, requests)
        result = await sharer.share_once()
        status.failures = 0
        status.last_error = None
        status.last_success = now() if not result.muted else status.last_success
        return result, interval
    except Exception as exc:
        cause = real_cause(exc)
        if not expected(cause):
            log.error("sharing pass crashed", ctd_event="sharing_failed", exc_info=cause)
        result = await _failed(sharer, status, cause, logged=not expected(cause))
        status.state, delay = next_attempt(cause, status.failures, interval=interval)
        status.next_run = now() + int(delay) if delay != float("inf") else None
        result.next_attempt = iso(status.next_run)
        return result, delay


async def _failed(sharer: Sharer, status: SharingStatus, exc: BaseException, logged: bool = False) -> ShareResult:
    msg = describe(exc)
    status.failures += 1
    status.errors[type(exc).__name__] = status.errors.get(type(exc).__name__, 0) + 1
    status.last_error = msg
    if not logged:
        log.error("sharing pass failed", ctd_event="sharing_failed", error=msg, ctd_destination=sharer.sh.destination)
    try:
        await sharer.store.finish_pass(sharer.name, now=now(), error=msg)
    except Exception as exc:  # a full disk: the failure stays in status (memory); the pass is retried
        log.warning(
            "sharing failure not recorded: the store cannot write it (kept in memory)",
            ctd_event="failure_not_recorded",
            error=msg,
            store_error=describe(exc),
            exc_info=None if isinstance(exc, StoreError) else exc,
        )
    return ShareResult(sharing=sharer.name, error=msg)
