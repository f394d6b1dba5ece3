"""The daemon's Prometheus metrics (``[daemon] metrics = "HOST:PORT"``), in prometheus-client's exposition format.

A scrape reads what the actors already keep (``SourceStatus``/``SharingStatus``
counters and pull-duration histograms, the store actor's statistics) and two
store reads that cost a scan today: the indicator counts and the ledger sizes.
Those are cached for ``STORE_TTL`` seconds, so a scraper (or several) cannot
make the store count a large table more than once per TTL. Counters count
since the actor started: a reload that restarts a source or sharing resets
its counters, which ``rate()`` handles as any counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ctd import __version__
from ctd.service.metrics_server import serve_metrics

if TYPE_CHECKING:
    from ctd.daemon.daemon import Daemon

log = structlog.get_logger("ctd.metrics")

STORE_TTL: Final = 15.0  # seconds a scrape reuses the store's counts
RETRY: Final = 30.0  # seconds before binding the endpoint again after a failure
REJECT_REASONS: Final = {"invalid": "invalid", "warninglisted": "warninglisted", "held": "operator_retracted"}


class DaemonMetrics:
    """Renders the daemon's metrics for one scrape."""

    def __init__(self, daemon: Daemon, ttl: float = STORE_TTL) -> None:
        self.d = daemon
        self.ttl = ttl
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def render(self) -> tuple[bytes, str]:
        store = await self._store_counts()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(list(self._families(store))))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    async def _store_counts(self) -> dict[str, Any]:
        now = trio.current_time()
        if self._cached is not None and now - self._cached[0] < self.ttl:
            return self._cached[1]
        store = self.d.store
        ledgers = {name: (await store.ledger_counts(name))["counts"] for name in sorted(self.d.config.sharing)}
        counts = {"indicators": await store.counts(), "ledgers": ledgers}
        self._cached = (trio.current_time(), counts)
        return counts

    def _families(self, store: dict[str, Any]) -> Iterator[Metric]:
        info = GaugeMetricFamily("ctd_build_info", "ctd's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("ctd_start_time_seconds", "when the daemon started", value=self.d.started_at)
        yield from self._sources()
        yield from self._sharings(store["ledgers"])
        yield from self._store(store["indicators"])

    def _sources(self) -> Iterator[Metric]:
        pulls = CounterMetricFamily("ctd_source_pulls", "pull cycles, by outcome", labels=["source", "outcome"])
        iocs = CounterMetricFamily(
            "ctd_source_indicators", "IoCs a source reported: new, updated, retracted", labels=["source", "outcome"]
        )
        rejected = CounterMetricFamily(
            "ctd_source_rejected", "reports not taken, by reason class", labels=["source", "reason"]
        )
        duration = HistogramMetricFamily(
            "ctd_source_pull_duration_seconds", "how long pull cycles took", labels=["source"]
        )
        success = GaugeMetricFamily(
            "ctd_source_last_success_timestamp_seconds", "end of the last successful pull", labels=["source"]
        )
        failures = GaugeMetricFamily(
            "ctd_source_consecutive_failures", "failed pulls since the last success", labels=["source"]
        )
        for name in self.d.sources.names():
            st = self.d.sources.get(name).status
            for outcome, n in st.pulls.items():
                pulls.add_metric([name, outcome], n)
            for outcome in ("new", "updated", "retracted"):
                iocs.add_metric([name, outcome], getattr(st.totals, outcome))
            for field, reason in REJECT_REASONS.items():
                rejected.add_metric([name, reason], getattr(st.totals, field))
            h = st.pull_seconds
            buckets = [(_le(b), c) for b, c in zip(h.buckets, h.counts, strict=True)] + [("+Inf", h.count)]
            duration.add_metric([name], buckets, h.sum)
            if st.last_success is not None:
                success.add_metric([name], st.last_success)
            failures.add_metric([name], st.failures)
        yield from (pulls, iocs, rejected, duration, success, failures)

    def _sharings(self, ledgers: dict[str, dict[str, int]]) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "ctd_sharing_indicators",
            "IoCs a sharing delivered: pushed, retracted, rejected (the destination refused them)",
            labels=["sharing", "outcome"],
        )
        errors = CounterMetricFamily(
            "ctd_sharing_errors", "failed passes, by error class", labels=["sharing", "destination", "class"]
        )
        entries = GaugeMetricFamily(
            "ctd_sharing_ledger_entries", "delivery ledger entries, by state", labels=["sharing", "state"]
        )
        success = GaugeMetricFamily(
            "ctd_sharing_last_success_timestamp_seconds", "end of the last successful pass", labels=["sharing"]
        )
        failures = GaugeMetricFamily(
            "ctd_sharing_consecutive_failures", "failed passes since the last success", labels=["sharing"]
        )
        for name in self.d.sharings.names():
            st = self.d.sharings.get(name).status
            for outcome, n in st.totals.items():
                delivered.add_metric([name, outcome], n)
            for cls, n in sorted(st.errors.items()):
                errors.add_metric([name, st.sh.destination, cls], n)
            if st.last_success is not None:
                success.add_metric([name], st.last_success)
            failures.add_metric([name], st.failures)
        for name, counts in ledgers.items():
            for state, n in counts.items():
                entries.add_metric([name, state], n)
        yield from (delivered, errors, entries, success, failures)

    def _store(self, indicators: dict[str, Any]) -> Iterator[Metric]:
        st = self.d.store.statistics()
        yield GaugeMetricFamily("ctd_store_queue_depth", "requests waiting for the store", value=st.queued)
        yield CounterMetricFamily("ctd_store_requests", "store requests performed", value=st.handled)
        yield CounterMetricFamily(
            "ctd_store_busy_seconds", "time spent performing store requests (transactions)", value=st.busy_seconds
        )
        by = GaugeMetricFamily("ctd_indicators", "stored indicators, by type and state", labels=["type", "state"])
        for typ, c in sorted((indicators.get("by_type") or {}).items()):
            for state in ("active", "inactive"):
                by.add_metric([typ, state], c.get(state, 0))
        yield by


class _Snapshot:
    """A prometheus-client collector over families built for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _le(bound: float) -> str:
    return str(float(bound))


async def run_metrics(daemon: Daemon, address: str) -> None:
    """Serve the endpoint until cancelled; a bind failure is logged and retried (metrics are not worth a stop)."""
    metrics = DaemonMetrics(daemon)
    while True:
        try:
            await serve_metrics(address, metrics.render)
        except OSError as exc:
            log.warning(
                f"cannot serve metrics on {address}: {exc.strerror or exc}; retrying in {RETRY:.0f} s",
                ctd_event="metrics_failed",
                address=address,
                error=exc.strerror or str(exc),
            )
        await trio.sleep(RETRY)
