"""Backups while ctd runs, integrity checks on demand, and the documented restore procedure: kill,
damage, restore from a backup, restart — nothing the backup's ledger records as shared is sent again
(issue 11: `ctdctl db backup`, `ctdctl db check`, restore)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctd import exits
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.faults.helpers import (
    checkpoint,
    counters_match,
    damage_pages,
    journal,
    no_duplicates,
    one_line_error,
    run_ctd,
    store_values,
)


def values(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}.backup.example" for i in range(n)]


@pytest.fixture
def site() -> Iterator[Path]:
    d = short_tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def events(d: DaemonProc, name: str) -> list[dict]:
    return [e for e in d.logs() if e.get("ctd_event") == name]


def test_backup_while_ingesting_and_check(site: Path) -> None:
    """`ctdctl db backup` copies the store while a large pull commits; the copy is a whole ctd database,
    the pull completes, and `ctdctl db check` passes on the live store and fails on a damaged one."""
    (site / "feed.txt").write_text("\n".join(values("i", 80_000)) + "\n")
    d = DaemonProc(site, f'[plugins.feed]\nadapter = "file"\npath = "{site}/feed.txt"\nbatch_size = 2000\n')
    try:
        d.start().wait_ready()
        wait_for(lambda: events(d, "store_opened"), "the store")
        first = d.ctl_json("db", "backup")
        second = d.ctl_json("db", "backup", str(site / "copy.db"))
        assert Path(first["path"]).parent == site / "var" / "backups"
        assert second["path"] == str(site / "copy.db") and second["bytes"] > 0
        r = d.ctl("db", "backup", str(site / "copy.db"))
        assert r.returncode == 2 and "exists" in r.stderr  # never overwritten
        wait_for(lambda: events(d, "source_pull_completed"), "the pull to complete", 90)
        for path in (first["path"], second["path"]):
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            n = conn.execute("SELECT count(*) FROM indicator").fetchone()[0]
            conn.close()
            assert 0 <= n <= 80_000
            counters_match(Path(path))
        assert d.ctl_json("db", "check")["ok"] is True
        assert len(store_values(site / "var" / "ctd.db")) == 80_000
        db = site / "var" / "ctd.db"
        checkpoint(db)
        damage_pages(db, db.stat().st_size // 4096 // 2, 4)
        r = d.ctl("db", "check")
        assert r.returncode == 2 and "DAMAGED" in r.stdout
        assert events(d, "database_check_failed")
    finally:
        d.cleanup()


def test_restore_from_backup_shares_nothing_twice(site: Path) -> None:
    """Kill, damage, restore the backup as docs/operations.md says, restart: what the backup's ledger
    records as shared is not pushed again; what was shared after the backup is re-sent exactly once."""
    sent = site / "sent.jsonl"
    a, b = values("a", 300), values("b", 200)
    (site / "feed.txt").write_text("\n".join(a) + "\n")
    cfg = (
        f'[plugins.feed]\nadapter = "file"\npath = "{site}/feed.txt"\nsync_interval = "1h"\n'
        f'[plugins.dest]\nadapter = "tests.faults.helpers:RecordingDestination"\npull = false\njournal = "{sent}"\n'
        '[rules.all]\nfilter = "type = domain"\n'
        '[sharing.out]\nsources = ["feed"]\nrule = "all"\ndestination = "dest"\naction = "add"\ninterval = "1s"\n'
    )
    d = DaemonProc(site, cfg)
    db = site / "var" / "ctd.db"
    try:
        d.start().wait_ready()
        wait_for(lambda: all(journal(sent)[("push", v)] for v in a), "set A shared")
        backup = Path(d.ctl_json("db", "backup")["path"])
        (site / "feed.txt").write_text("\n".join(a + b) + "\n")
        assert d.ctl_json("sync", "feed")["new"] == 200
        wait_for(lambda: all(journal(sent)[("push", v)] for v in b), "set B shared after the backup")
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait()
        d.stop()
        checkpoint(db)
        damage_pages(db, db.stat().st_size // 4096 // 2, 4)
        one_line_error(run_ctd("run", "--config", str(d.config), cwd=site), exits.DATAERR, str(db))
        # The restore procedure of docs/operations.md: move the damaged files aside, copy the backup in.
        aside = site / "var" / "damaged"
        aside.mkdir()
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db}{suffix}").exists():
                shutil.move(f"{db}{suffix}", aside)
        shutil.copy(backup, db)
        d.start().wait_ready()
        assert d.ctl_json("sync", "feed")["new"] == 200  # the source re-reports what came after the backup
        wait_for(lambda: all(journal(sent)[("push", v)] == 2 for v in b), "set B re-sent once")
        wait_for(
            lambda: (lambda sh: sh["counts"]["pending"] == 0 and sh["counts"]["shared"] == 500)(
                d.ctl_json("sharing", "list")[0]
            ),
            "the ledger to settle",
        )
        assert d.stop() == 0
        seen = journal(sent)
        assert {v: seen[("push", v)] for v in a} == dict.fromkeys(a, 1)  # the backup's ledger: not again
        assert {v: seen[("push", v)] for v in b} == dict.fromkeys(b, 2)  # after the backup: once more
        assert not [k for k in seen if k[0] == "retract"]
        rows = store_values(db)
        no_duplicates(rows)
        assert {v for _, v in rows} == set(a + b)
        lines = [json.loads(x) for x in sent.read_text().splitlines()]
        assert all(entry["op"] == "push" for entry in lines)
    finally:
        d.cleanup()
