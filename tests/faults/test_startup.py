"""Faults found when ctd starts: a damaged or foreign database, a missing one next to its backups, a
state_dir that cannot be used, another ctd on the same files. Each ends the start with one line naming
the path and the cause, and the exit status of the documented table (issue 11 finding 5, issue 13
finding 2); ``check-config --deep`` finds the same without starting."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctd import exits
from ctd.store.schema import MIGRATIONS
from tests.daemonproc import DaemonProc, env, short_tmpdir, wait_for
from tests.faults.helpers import checkpoint, damage_pages, one_line_error, run_ctd, store_values, tmpfs

FEED = "\n".join(f"host{i}.startup.example" for i in range(3000)) + "\n"


def config(d: Path, state_dir: Path | str | None = None, socket: Path | None = None, extra: str = "") -> Path:
    path = d / "ctd.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{state_dir or d / "var"}"\nsocket = "{socket or d / "ctd.sock"}"\n'
        f'[plugins.feed]\nadapter = "file"\npath = "{d / "feed.txt"}"\nsync_interval = "1h"\n{extra}'
    )
    return path


@pytest.fixture(scope="module")
def good_db() -> Iterator[Path]:
    """A store filled by one `ctd run --once` (3,000 IoCs), cleanly closed: copied into each test."""
    d = short_tmpdir()
    (d / "feed.txt").write_text(FEED)
    r = run_ctd("run", "--once", "--config", str(config(d)), cwd=d)
    assert r.returncode == 0, r.stderr
    yield d / "var" / "ctd.db"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def site(good_db: Path) -> Iterator[Path]:
    """A working directory with a copy of the good store under var/."""
    d = short_tmpdir()
    (d / "feed.txt").write_text(FEED)
    (d / "var").mkdir()
    shutil.copy(good_db, d / "var" / "ctd.db")
    config(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(d: Path) -> subprocess.CompletedProcess[str]:
    return run_ctd("run", "--config", str(d / "ctd.toml"), cwd=d)


def deep(d: Path) -> subprocess.CompletedProcess[str]:
    return run_ctd("check-config", "--deep", str(d / "ctd.toml"), cwd=d)


class TestDamagedDatabase:
    def test_garbage_header(self, site: Path) -> None:
        """A database whose header is garbage is refused: exit 65, the path named, nothing rewritten."""
        db = site / "var" / "ctd.db"
        with open(db, "r+b") as f:
            f.write(b"this is not sqlite at all, just garbage bytes....." * 2)
        before = db.read_bytes()
        one_line_error(start(site), exits.DATAERR, str(db), "not a SQLite database")
        assert db.read_bytes() == before
        assert deep(site).returncode == exits.DATAERR

    def test_truncated(self, site: Path) -> None:
        """A database cut short is refused as truncated (exit 65)."""
        db = site / "var" / "ctd.db"
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.truncate(size // 2 // 4096 * 4096)
        one_line_error(start(site), exits.DATAERR, str(db), "truncated")
        assert "truncated" in deep(site).stdout

    def test_damaged_pages(self, site: Path) -> None:
        """Pages overwritten in the middle of the file fail the quick check at start (exit 65)."""
        db = site / "var" / "ctd.db"
        pages = db.stat().st_size // 4096
        damage_pages(db, pages // 2, 3)
        one_line_error(start(site), exits.DATAERR, str(db), "damaged")

    def test_not_a_ctd_database(self, site: Path) -> None:
        """Another program's SQLite file in state_dir is not taken over (exit 65)."""
        db = site / "var" / "ctd.db"
        db.unlink()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
        conn.commit()
        conn.close()
        one_line_error(start(site), exits.DATAERR, str(db), "not a ctd database")
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("accounts",)]
        conn.close()

    def test_newer_schema(self, site: Path) -> None:
        """A database written by a newer ctd is refused with its version (exit 76), not migrated or opened."""
        db = site / "var" / "ctd.db"
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
        conn.close()
        line = one_line_error(start(site), exits.PROTOCOL, str(db), "newer")
        assert str(len(MIGRATIONS) + 3) in line
        assert deep(site).returncode == exits.PROTOCOL


class TestMissingDatabase:
    def backup(self, site: Path) -> Path:
        backups = site / "var" / "backups"
        backups.mkdir()
        target = backups / "ctd-20260101T000000Z.db"
        shutil.copy(site / "var" / "ctd.db", target)
        return target

    def test_empty_database_next_to_a_backup(self, site: Path) -> None:
        """A zero-length ctd.db next to a ledger backup is not silently made a new store (exit 66)."""
        backup = self.backup(site)
        (site / "var" / "ctd.db").write_bytes(b"")
        one_line_error(start(site), exits.NOINPUT, str(site / "var" / "ctd.db"), backup.name, "Restore")
        assert (site / "var" / "ctd.db").stat().st_size == 0

    def test_missing_database_next_to_a_backup(self, site: Path) -> None:
        """A missing ctd.db next to a ledger backup refuses the start with the restore procedure (exit 66)."""
        self.backup(site)
        (site / "var" / "ctd.db").unlink()
        one_line_error(start(site), exits.NOINPUT, "missing", "backups")
        assert not (site / "var" / "ctd.db").exists()
        assert deep(site).returncode == exits.NOINPUT

    def test_stray_wal(self, site: Path) -> None:
        """A -wal without its database is reported, never replayed into a new file (exit 66)."""
        db = site / "var" / "ctd.db"
        (site / "var" / "ctd.db-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4092)
        db.unlink()
        one_line_error(start(site), exits.NOINPUT, str(db) + "-wal")

    def test_empty_database_without_backups_starts_a_new_store(self, site: Path) -> None:
        """A zero-length ctd.db with no backup anywhere is a new store (logged), as on a first start."""
        (site / "var" / "ctd.db").write_bytes(b"")
        r = run_ctd("run", "--once", "--config", str(site / "ctd.toml"), cwd=site)
        assert r.returncode == 0, r.stderr
        assert '"store_new"' in r.stderr
        assert len(store_values(site / "var" / "ctd.db")) == 3000


class TestStateDir:
    def test_under_proc(self) -> None:
        """A state_dir under /proc is refused as the wrong kind of filesystem (exit 78), in one line."""
        d = short_tmpdir()
        try:
            config(d, state_dir="/proc/ctd-state")
            one_line_error(start(d), exits.FSTYPE, "/proc/ctd-state", "proc")
            assert deep(d).returncode == exits.FSTYPE
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_not_a_directory(self, site: Path) -> None:
        """A state_dir that is a file is refused (exit 73)."""
        config(site, state_dir=site / "feed.txt")
        one_line_error(start(site), exits.CANTCREAT, str(site / "feed.txt"), "not a directory")

    def test_read_only_filesystem(self) -> None:
        """A state_dir on a read-only filesystem is refused (exit 73) before SQLite says "unable to open"."""
        d = short_tmpdir()
        try:
            with tmpfs("1m") as fs:
                r = subprocess.run(["mount", "-o", "remount,ro", str(fs)], capture_output=True)
                assert r.returncode == 0, r.stderr
                config(d, state_dir=fs / "var")
                one_line_error(start(d), exits.CANTCREAT, str(fs / "var"), "Read-only")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_permission_denied(self) -> None:
        """A state_dir ctd may not write is refused with its path and uid (exit 77), not "unable to open"."""
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to take root's override of file permissions away")
        d = short_tmpdir()
        try:
            locked = d / "locked"
            locked.mkdir(mode=0o700)
            shutil.chown(locked, 12345, 12345)
            config(d, state_dir=locked / "var")
            r = subprocess.run(
                ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]
                + [sys.executable, "-m", "ctd", "run", "--config", str(d / "ctd.toml")],
                capture_output=True,
                text=True,
                cwd=d,
                env=env(),
                timeout=60,
            )
            one_line_error(r, exits.NOPERM, str(locked / "var"), "Permission denied")
        finally:
            shutil.rmtree(d, ignore_errors=True)


class TestSecondDaemon:
    def test_second_daemon_on_the_same_state_dir(self, site: Path) -> None:
        """A second daemon on a state_dir a daemon holds is refused (exit 75) with the holder's pid;
        so is `ctd run --once`, which leaves the destinations and the store alone."""
        first = DaemonProc(site, (site / "ctd.toml").read_text())
        try:
            first.start().wait_ready()
            pid = first.ctl_json("status")["pid"]
            other = site / "other"
            other.mkdir()
            config(other, state_dir=site / "var")
            one_line_error(start(other), exits.TEMPFAIL, str(site / "var"), f"pid {pid}")
            out = site / "list.txt"
            (site / "once.toml").write_text(
                (site / "ctd.toml").read_text().replace(str(site / "ctd.sock"), str(site / "once.sock"))
                + '[plugins.list]\nadapter = "file"\npull = false\npath = "/dev/null"\n'
                + '[rules.all]\nfilter = "type = domain"\n'
                + '[sharing.out]\nsources = ["feed"]\nrule = "all"\ndestination = "list"\naction = "write"\n'
                + f'params = {{ path = "{out}" }}\n'
            )
            r = run_ctd("run", "--once", "--config", str(site / "once.toml"), cwd=site)
            one_line_error(r, exits.TEMPFAIL, "--once")
            assert not out.exists()
            assert deep(other).returncode == exits.TEMPFAIL
            assert first.proc is not None and first.proc.poll() is None
        finally:
            first.cleanup()

    def test_second_daemon_on_the_same_socket(self, site: Path) -> None:
        """A second daemon on another state_dir but the same socket stops (exit 75) before opening a store."""
        first = DaemonProc(site, (site / "ctd.toml").read_text())
        try:
            first.start().wait_ready()
            other = site / "other"
            other.mkdir()
            config(other, state_dir=other / "var", socket=site / "ctd.sock")
            one_line_error(start(other), exits.TEMPFAIL, str(site / "ctd.sock"))
            assert not (other / "var" / "ctd.db").exists()
            assert first.ctl_rc("status") == 0
        finally:
            first.cleanup()


def test_damage_found_at_runtime_stops_the_store_not_the_daemon(site: Path) -> None:
    """Damage met while running ("malformed") stops the store, logs one clear event, marks the daemon
    degraded in `ctdctl status`, halts the actors instead of failing forever, and keeps answering."""
    config(site, extra="")
    (site / "ctd.toml").write_text((site / "ctd.toml").read_text().replace('sync_interval = "1h"', "pull = false"))
    d = DaemonProc(site, (site / "ctd.toml").read_text())
    try:
        d.start().wait_ready()
        db = site / "var" / "ctd.db"
        checkpoint(db)  # what the store reads next comes from the file: damage it
        pages = db.stat().st_size // 4096
        damage_pages(db, 2, pages - 2)
        r = d.ctl("indicators", "export")
        assert r.returncode == 2 and "damaged" in r.stderr
        st = d.ctl_json("status")
        assert st["state"] == "degraded" and st["store"] == "damaged"
        assert any("damaged" in p and str(db) in p for p in st["problems"])
        assert st["indicators"]["total"] == 3000  # the last counts are still shown
        r = d.ctl("indicators", "search")
        assert r.returncode == 2 and "damaged" in r.stderr
        wait_for(lambda: [e for e in d.logs() if e.get("ctd_event") == "store_damaged"], "the store_damaged event")
        assert len([e for e in d.logs() if e.get("ctd_event") == "store_damaged"]) == 1
        assert d.proc is not None and d.proc.poll() is None
        assert d.stop() == 0
    finally:
        d.cleanup()
