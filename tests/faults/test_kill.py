"""SIGKILL at random points of an ingest, again and again: after each kill the store holds part of the
input with no duplicate and counters that match; after the last restart it holds exactly the input's
distinct set (issue 11: kills at the worst moment lose nothing)."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from functools import partial
from pathlib import Path

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.faults.helpers import counters_match, no_duplicates, run_ctd, store_values

SEED = 1729
KILLS = 4


def feed_lines(n: int) -> list[str]:
    """Domains, URLs, IPs and hashes; one in ten repeats an earlier line (the store keeps one of each)."""
    rng = random.Random(SEED)
    out: list[str] = []
    for i in range(n):
        if out and rng.random() < 0.1:
            out.append(rng.choice(out))
            continue
        kind = i % 4
        if kind == 0:
            out.append(f"k{i}.kill.example")
        elif kind == 1:
            out.append(f"http://k{i}.kill.example/p/{i}")
        elif kind == 2:
            out.append(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
        else:
            out.append(f"{i:064x}")
    return out


def committed_line(db: Path) -> int | None:
    """How far the interrupted pull has committed (its resume point), read beside the daemon."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT sub FROM source WHERE name = 'feed'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return json.loads(row[0])["line"] if row and row[0] else None


def past(db: Path, line: int) -> bool:
    return (committed_line(db) or 0) >= line


def test_sigkill_at_random_points_of_ingest_loses_and_doubles_nothing() -> None:
    """Killed at random moments of a 60k-line pull (once while it starts, then at random committed
    positions), the store never holds a value twice or counts it wrong, and the last start completes it
    to exactly the input's distinct values."""
    d = short_tmpdir()
    lines = feed_lines(60_000)
    (d / "feed.txt").write_text("\n".join(lines) + "\n")
    proc = DaemonProc(d, f'[plugins.feed]\nadapter = "file"\npath = "{d}/feed.txt"\nbatch_size = 500\n')
    db = d / "var" / "ctd.db"
    rng = random.Random(SEED)
    distinct = set(lines)
    targets = sorted(rng.sample(range(2_000, 55_000), KILLS - 1))
    try:
        for target in [None, *targets]:
            proc.start()
            if target is None:
                time.sleep(rng.uniform(0.0, 0.4))  # while it opens the store, or right at its first batch
            else:
                wait_for(partial(past, db, target), f"the pull to pass line {target}", 60)
            assert proc.proc is not None
            proc.proc.kill()
            proc.proc.wait()
            proc.stop()
            if db.exists():
                rows = store_values(db)
                no_duplicates(rows)
                assert {v for _, v in rows} <= distinct
                counters_match(db)
        r = run_ctd("run", "--once", "--config", str(proc.config), cwd=d)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = store_values(db)
        no_duplicates(rows)
        assert {v for _, v in rows} == distinct
        counters_match(db)
    finally:
        proc.cleanup()
        shutil.rmtree(d, ignore_errors=True)
