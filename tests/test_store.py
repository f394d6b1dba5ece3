"""Store semantics: dedup, provenance, reconciliation, effective metadata, expiry."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctd.model import iso
from ctd.store import KEEP_REJECTED, IngestBatch
from ctd.store import query as store_query
from ctd.store import rejections as store_rejections
from ctd.store import sql as store_sql
from ctd.store.schema import MIGRATIONS
from tests.storeutil import DAY, NOW, ingest, s, show


@pytest.fixture
def conn(tmp_path):
    c = store_sql.connect(str(tmp_path / "ctd.db"))
    yield c
    c.close()


class TestSchema:
    def test_wal_and_version(self, conn):
        """The database runs in WAL mode at the latest schema version."""
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    def test_reopen_keeps_data(self, tmp_path):
        """Reopening an existing database does not re-run migrations or lose rows."""
        path = str(tmp_path / "x.db")
        c = store_sql.connect(path)
        ingest(c, "a", [s("evil.example")])
        c.close()
        c = store_sql.connect(path)
        assert store_query.counts(c)["total"] == 1
        c.close()

    def test_newer_schema_refused(self, tmp_path):
        """A database from a newer ctd is refused instead of being corrupted."""
        path = str(tmp_path / "x.db")
        c = sqlite3.connect(path)
        c.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        c.close()
        with pytest.raises(sqlite3.DatabaseError, match="newer"):
            store_sql.connect(path)


class TestDedup:
    def test_new_then_updated_counts(self, conn):
        """First report counts as new, a re-report as updated."""
        r1 = ingest(conn, "a", [s("evil.example"), s("bad.example")])
        assert (r1.new, r1.updated) == (2, 0)
        r2 = ingest(conn, "a", [s("evil.example")])
        assert (r2.new, r2.updated) == (0, 1)

    def test_one_indicator_one_provenance_row_per_source(self, conn):
        """The same value from two sources is one indicator with two provenance rows."""
        ingest(conn, "a", [s("evil.example")])
        ingest(conn, "b", [s("evil.example")])
        ind = show(conn, "domain", "evil.example")
        assert [x["source"] for x in ind["sources"]] == ["a", "b"]
        assert store_query.counts(conn)["total"] == 1

    def test_type_is_part_of_identity(self, conn):
        """The same text as two types is two indicators."""
        ingest(conn, "a", [s("evil.example", "domain"), s("evil.example", "hostname")])
        assert store_query.counts(conn)["total"] == 2

    def test_hits_count_reports(self, conn):
        """Every report increments the indicator's hit counter."""
        for src in ("a", "b", "a"):
            ingest(conn, src, [s("evil.example")])
        assert show(conn, "domain", "evil.example")["hits"] == 3


class TestSameBatch:
    def test_value_twice_in_one_batch(self, conn):
        """A value reported twice in one batch is one indicator, two hits, merged by the policy."""
        r = ingest(
            conn,
            "a",
            [s("x.example", severity="low", last_seen=NOW - 10), s("x.example", severity="high", last_seen=NOW)],
        )
        assert r.new == 1
        ind = show(conn, "domain", "x.example")
        assert ind["hits"] == 2 and ind["severity"] == "high" and ind["last_seen"] == iso(NOW)

    def test_existing_value_twice_in_one_batch(self, conn):
        """An existing single-source value reported twice again is merged like separate reports."""
        ingest(conn, "a", [s("x.example", severity="low", last_seen=NOW - 100)])
        ingest(
            conn,
            "a",
            [s("x.example", severity="medium", last_seen=NOW - 10), s("x.example", severity="critical", last_seen=NOW)],
        )
        ind = show(conn, "domain", "x.example")
        assert ind["severity"] == "critical" and ind["last_seen"] == iso(NOW)


class TestReconcile:
    def test_last_seen_policy_newer_report_wins(self, conn):
        """Under last_seen, a newer re-report replaces that source's metadata."""
        ingest(conn, "a", [s("x.example", severity="low", last_seen=NOW - 10)])
        ingest(conn, "a", [s("x.example", severity="high", last_seen=NOW)])
        src = show(conn, "domain", "x.example")["sources"][0]
        assert src["severity"] == "high"

    def test_last_seen_policy_older_report_ignored(self, conn):
        """Under last_seen, an older re-report does not overwrite metadata but widens first_seen."""
        ingest(conn, "a", [s("x.example", severity="high", first_seen=NOW, last_seen=NOW)])
        ingest(conn, "a", [s("x.example", severity="low", first_seen=NOW - 100, last_seen=NOW - 50)])
        src = show(conn, "domain", "x.example")["sources"][0]
        assert src["severity"] == "high"
        assert src["first_seen"] == iso(NOW - 100)
        assert src["last_seen"] == iso(NOW)

    def test_first_seen_policy_never_overrides(self, conn):
        """Under first_seen, the first report's metadata is kept."""
        ingest(conn, "a", [s("x.example", severity="low", last_seen=NOW - 10)], policy="first_seen")
        ingest(conn, "a", [s("x.example", severity="high", last_seen=NOW)], policy="first_seen")
        assert show(conn, "domain", "x.example")["sources"][0]["severity"] == "low"

    def test_highest_severity_policy(self, conn):
        """Under highest_severity, a more severe report wins even if older."""
        pol = "highest_severity"
        ingest(conn, "a", [s("x.example", severity="high", last_seen=NOW - 10)], policy=pol)
        ingest(conn, "a", [s("x.example", severity="low", last_seen=NOW)], policy=pol)
        assert show(conn, "domain", "x.example")["sources"][0]["severity"] == "high"
        ingest(conn, "a", [s("x.example", severity="critical", last_seen=NOW - 100)], policy=pol)
        assert show(conn, "domain", "x.example")["sources"][0]["severity"] == "critical"


class TestEffective:
    def test_reputation_override(self, conn):
        """A plugin's reputation override replaces what the feed said."""
        ingest(conn, "a", [s("x.example", reputation=2)], reputation=9)
        assert show(conn, "domain", "x.example")["reputation"] == 9

    def test_extra_tags_added(self, conn):
        """A plugin's extra tags are added to each of its reports."""
        ingest(conn, "a", [s("x.example", tags=("phish",))], tags=("osint",))
        assert show(conn, "domain", "x.example")["tags"] == ["osint", "phish"]

    def test_highest_reputation_source_wins(self, conn):
        """Effective metadata comes from the source with the highest reputation."""
        ingest(conn, "low", [s("x.example", severity="low", comments="from low")], reputation=3)
        ingest(conn, "high", [s("x.example", severity="critical", comments="from high")], reputation=8)
        ind = show(conn, "domain", "x.example")
        assert (ind["severity"], ind["comments"], ind["reputation"]) == ("critical", "from high", 8)

    def test_lower_reputation_later_does_not_replace(self, conn):
        """A later duplicate from a lower-reputation source does not replace the metadata."""
        ingest(conn, "high", [s("x.example", severity="critical")], reputation=8)
        ingest(conn, "low", [s("x.example", severity="low", last_seen=NOW + 5)], reputation=3, now=NOW + 5)
        assert show(conn, "domain", "x.example")["severity"] == "critical"

    def test_tie_goes_to_latest_last_seen(self, conn):
        """Equal reputation: the source that saw it last provides the metadata."""
        ingest(conn, "a", [s("x.example", severity="low", last_seen=NOW - 100)], reputation=5)
        ingest(conn, "b", [s("x.example", severity="high", last_seen=NOW)], reputation=5)
        assert show(conn, "domain", "x.example")["severity"] == "high"


reports = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(1, 10),
        st.sampled_from(["unknown", "low", "medium", "high", "critical"]),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda r: r[0],
)


@settings(max_examples=60, deadline=None)
@given(reports=reports, order=st.randoms(use_true_random=False))
def test_effective_metadata_is_order_independent(tmp_path_factory, reports, order):
    """Effective metadata is the same whatever order the sources arrive in."""
    results = []
    for attempt in range(2):
        seq = list(reports)
        if attempt:
            order.shuffle(seq)
        c = store_sql.connect(str(tmp_path_factory.mktemp("p") / "db"))
        for src, rep, sev, ago in seq:
            ingest(c, src, [s("x.example", severity=sev, comments=src, last_seen=NOW - ago)], reputation=rep)
        ind = show(c, "domain", "x.example")
        results.append(
            {
                k: ind[k]
                for k in ("reputation", "severity", "comments", "first_seen", "last_seen", "expires_at", "active")
            }
        )
        c.close()
    assert results[0] == results[1]


class TestExpiry:
    def test_expiry_counts_from_the_report_to_ctd(self, conn):
        """A source's expiry is aging_days after the batch that reported it to ctd, not after the feed's last_seen."""
        ingest(conn, "a", [s("x.example", last_seen=NOW - 40 * DAY)], aging_days=30)
        ind = show(conn, "domain", "x.example")
        assert ind["expires_at"] == iso(NOW + 30 * DAY) and ind["active"]
        assert ind["sources"][0]["last_seen"] == iso(NOW - 40 * DAY)  # the feed's own time stays metadata

    def test_explicit_expiry_wins(self, conn):
        """A feed's own expiry is used instead of aging_days."""
        ingest(conn, "a", [s("x.example", last_seen=NOW, expires_at=NOW + 3600)], aging_days=30)
        assert show(conn, "domain", "x.example")["expires_at"] == iso(NOW + 3600)

    def test_aging_zero_never_expires(self, conn):
        """aging_days = 0 means the source entry never expires."""
        ingest(conn, "a", [s("x.example")], aging_days=0)
        ind = show(conn, "domain", "x.example")
        assert ind["expires_at"] is None and ind["active"]

    def test_old_feed_time_is_active_after_ingest(self, conn):
        """A report whose feed last_seen is older than aging_days is active right after ingest."""
        ingest(conn, "a", [s("x.example", last_seen=NOW - 100 * DAY)], aging_days=90)
        assert show(conn, "domain", "x.example")["active"]

    def test_rereport_extends_even_with_an_older_feed_time(self, conn):
        """A re-report extends the expiry from its ingest, whatever the feed's last_seen says."""
        ingest(conn, "a", [s("x.example", last_seen=NOW - DAY)], aging_days=1)
        later = NOW + 5 * DAY
        ingest(conn, "a", [s("x.example", last_seen=NOW - 2 * DAY)], aging_days=1, now=later)
        ind = show(conn, "domain", "x.example")
        assert ind["active"] and ind["expires_at"] == iso(later + DAY)
        assert ind["last_seen"] == iso(NOW - DAY)  # metadata: the latest feed time

    def test_explicit_expiry_wins_on_rereport(self, conn):
        """A re-report with its own expiry sets that expiry; one without goes back to aging from ingest."""
        ingest(conn, "a", [s("x.example", last_seen=NOW)], aging_days=30)
        ingest(conn, "a", [s("x.example", last_seen=NOW, expires_at=NOW + 3600)], aging_days=30, now=NOW + 60)
        assert show(conn, "domain", "x.example")["expires_at"] == iso(NOW + 3600)
        ingest(conn, "a", [s("x.example", last_seen=NOW)], aging_days=30, now=NOW + 120)
        assert show(conn, "domain", "x.example")["expires_at"] == iso(NOW + 120 + 30 * DAY)

    def test_expiry_of_a_second_source_counts_from_its_report(self, conn):
        """An indicator known from another source gets this source's expiry from this ingest, not its feed time."""
        ingest(conn, "a", [s("x.example", last_seen=NOW)], aging_days=1)
        ingest(conn, "b", [s("x.example", last_seen=NOW - 50 * DAY)], aging_days=30)
        ind = show(conn, "domain", "x.example")
        assert ind["expires_at"] == iso(NOW + 30 * DAY)

    def test_active_while_any_source_unexpired(self, conn):
        """The indicator stays active while any source entry is unexpired."""
        ingest(conn, "short", [s("x.example", last_seen=NOW)], aging_days=1)
        ingest(conn, "long", [s("x.example", last_seen=NOW)], aging_days=30)
        assert store_sql.expire(conn, NOW + 2 * DAY) == 0
        assert show(conn, "domain", "x.example")["active"]
        assert store_sql.expire(conn, NOW + 31 * DAY) == 1
        assert not show(conn, "domain", "x.example")["active"]

    def test_housekeeping_expires(self, conn):
        """The expiry sweep marks indicators inactive once their expiry passed."""
        ingest(conn, "a", [s("x.example", last_seen=NOW)], aging_days=1)
        assert store_sql.expire(conn, NOW + DAY - 1) == 0
        assert store_sql.expire(conn, NOW + DAY) == 1
        assert not show(conn, "domain", "x.example")["active"]

    def test_resighting_reactivates_and_extends(self, conn):
        """A re-sighting after expiry re-activates the indicator and extends its expiry."""
        ingest(conn, "a", [s("x.example", last_seen=NOW)], aging_days=1)
        store_sql.expire(conn, NOW + 2 * DAY)
        later = NOW + 3 * DAY
        ingest(conn, "a", [s("x.example", last_seen=later)], aging_days=1, now=later)
        ind = show(conn, "domain", "x.example")
        assert ind["active"] and ind["expires_at"] == iso(later + DAY)


class TestRetraction:
    def test_snapshot_retracts_missing_values(self, conn):
        """A snapshot that no longer contains a value retracts it for that source."""
        ingest(conn, "a", [s("x.example"), s("y.example")], snapshot_end=True)
        r = ingest(conn, "a", [s("x.example")], snapshot_end=True)
        assert r.retracted == 1
        y = show(conn, "domain", "y.example")
        assert not y["active"] and y["sources"][0]["retracted"]

    def test_snapshot_spanning_batches(self, conn):
        """Values reported in any batch of the same snapshot are kept."""
        ingest(conn, "a", [s("x.example"), s("y.example")], snapshot_end=True)
        ingest(conn, "a", [s("x.example")], fresh=True)
        r = ingest(conn, "a", [s("y.example")], fresh=False, snapshot_end=True)
        assert r.retracted == 0

    def test_retraction_by_one_source_keeps_other(self, conn):
        """A value retracted by one source stays active while another still reports it."""
        ingest(conn, "a", [s("x.example")], snapshot_end=True)
        ingest(conn, "b", [s("x.example")])
        ingest(conn, "a", [], snapshot_end=True)
        assert show(conn, "domain", "x.example")["active"]

    def test_rereport_clears_retraction(self, conn):
        """A source re-reporting a value it had retracted re-activates it."""
        ingest(conn, "a", [s("x.example")], snapshot_end=True)
        ingest(conn, "a", [], snapshot_end=True)
        ingest(conn, "a", [s("x.example")], snapshot_end=True)
        assert show(conn, "domain", "x.example")["active"]

    def test_explicit_retraction_in_sighting(self, conn):
        """A sighting flagged retracted (revoked by the feed) deactivates that source entry."""
        ingest(conn, "a", [s("x.example")])
        ingest(conn, "a", [s("x.example", retracted=True)])
        assert not show(conn, "domain", "x.example")["active"]


class TestAllowlist:
    def test_allowlisted_never_active(self, conn):
        """An allow-listed value is stored but never active."""
        ingest(conn, "a", [s("good.example")], allowlisted=lambda t, v: v == "good.example")
        ind = show(conn, "domain", "good.example")
        assert ind["allowlisted"] and not ind["active"]

    def test_reapply_allowlist(self, conn):
        """Changing the allowlist flips existing indicators both ways."""
        ingest(conn, "a", [s("good.example"), s("bad.example")])
        assert store_sql.reapply_allowlist(conn, lambda t, v: v == "good.example", NOW) == 1
        assert not show(conn, "domain", "good.example")["active"]
        assert store_sql.reapply_allowlist(conn, lambda t, v: False, NOW) == 1
        assert show(conn, "domain", "good.example")["active"]


class TestRejections:
    def test_kept_with_the_batch_by_class_newest_first(self, conn):
        """A batch's rejected records are kept per source and reason class, newest first, with the ingest time."""
        ingest(conn, "a", [s("x.example")], rejected=(("malformed", "line 1", "bad"), ("field", "line 2", "date")))
        ingest(conn, "a", [], now=NOW + 60, rejected=(("malformed", "line 9", "worse"),))
        ingest(conn, "b", [], rejected=(("malformed", "line 5", "other source"),))
        got = store_rejections.listing(conn, "a")
        assert [r["where"] for r in got["malformed"]] == ["line 9", "line 1"]
        assert got["malformed"][0] == {"at": iso(NOW + 60), "where": "line 9", "reason": "worse"}
        assert [r["reason"] for r in got["field"]] == ["date"]
        assert got["unsupported_pattern"] == [] and got["allowlisted"] == []

    def test_bounded_per_source_and_class(self, conn):
        """At most KEEP_REJECTED records per source and class are kept: a flood of one class keeps the others."""
        ingest(conn, "a", [], rejected=(("unsupported_type", "item 0", "kept"),))
        flood = tuple(("malformed", f"line {i}", "bad") for i in range(KEEP_REJECTED + 50))
        ingest(conn, "a", [], rejected=flood)
        got = store_rejections.listing(conn, "a")
        assert len(got["malformed"]) == KEEP_REJECTED
        assert got["malformed"][0]["where"] == f"line {KEEP_REJECTED + 49}"
        assert got["malformed"][-1]["where"] == "line 50"
        assert [r["where"] for r in got["unsupported_type"]] == ["item 0"]

    def test_rolled_back_with_a_failed_batch(self, conn):
        """A batch that fails to commit leaves no rejected records either."""
        with pytest.raises(sqlite3.ProgrammingError):
            store_sql.ingest(
                conn,
                IngestBatch(
                    source="a",
                    rows=[("domain",)],
                    policy="last_seen",
                    aging_days=1,
                    now=NOW,
                    fresh=False,
                    snapshot_end=False,
                    sub=None,
                    cursor=None,
                    rejected=(("malformed", "line 1", "bad"),),
                ),
            )
        assert store_rejections.listing(conn, "a")["malformed"] == []


class TestCheckpoint:
    def test_sub_checkpoint_commits_with_batch(self, conn):
        """A batch's sub-checkpoint is stored by the same ingest call."""
        ingest(conn, "a", [s("x.example")], sub={"offset": 10})
        assert store_sql.get_checkpoint(conn, "a").sub == {"offset": 10}

    def test_complete_pull_sets_last_run_and_clears_sub(self, conn):
        """Completing a pull records the cycle start and clears the resume point."""
        ingest(conn, "a", [s("x.example")], sub={"offset": 10})
        store_sql.complete_pull(conn, "a", NOW - 5, NOW)
        cp = store_sql.get_checkpoint(conn, "a")
        assert cp.last_run == NOW - 5 and cp.sub is None

    def test_failed_batch_rolls_back_checkpoint(self, conn):
        """A batch that fails to commit leaves neither its rows nor its checkpoint."""
        ingest(conn, "a", [s("x.example")], sub={"offset": 1})
        with pytest.raises(sqlite3.ProgrammingError):  # a stage row with too few columns
            store_sql.ingest(
                conn,
                IngestBatch(
                    source="a",
                    rows=[("domain",)],
                    policy="last_seen",
                    aging_days=1,
                    now=NOW,
                    fresh=False,
                    snapshot_end=False,
                    sub={"offset": 2},
                    cursor=None,
                ),
            )
        assert store_sql.get_checkpoint(conn, "a").sub == {"offset": 1}
        assert store_query.counts(conn)["total"] == 1


def test_batch_larger_than_one_staging_statement(tmp_path):
    """A batch larger than one staging statement can bind is staged completely."""
    c = store_sql.connect(str(tmp_path / "big.db"))
    values = [s(f"h{i}.bulk.example") for i in range(7000)]
    r = ingest(c, "a", values)
    assert (r.new, r.updated) == (7000, 0)
    assert store_query.counts(c)["total"] == 7000
    c.close()
