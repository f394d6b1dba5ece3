#!/usr/bin/env python3
"""Ingest benchmark: N synthetic IoCs through the real pipeline, against a bare-SQLite ceiling.

    python bench/ingest.py --n 1000000
    python bench/ingest.py --sizes 1000000,3000000 --json build/bench/ingest.json
    python bench/ingest.py --profile --n 300000

The pipeline is what ``ctd run --once`` does (ctd/once.py): a ``file`` plugin
(text format, auto-detected types) -> source actor ``pull_once`` -> store actor
``run_store`` -> SQLite. Each pipeline and the ceiling run in a child process
(this script with the hidden ``--child`` flag), so generating the input file in
the parent does not count towards the peak RSS. Targets are information: the
script exits 0 whether they are met or not.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import ipaddress
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchjson

SEED = 1729
BATCH = 20_000
AGING_DAYS = 90
T_NEW, T_RATIO, T_REINGEST, T_RSS = 50_000, 0.65, 150_000, 300  # issue 14's targets
TARGETS = {"new_per_s": T_NEW, "ratio": T_RATIO, "reingest_per_s": T_REINGEST, "rss_mb": T_RSS}

MIX = [("url", 35), ("domain", 20), ("ipv4", 15), ("ipv6", 5), ("sha256", 10), ("md5", 10), ("sha1", 5)]
WORDS = (
    "alpha bravo cdn mail login secure update pay portal files img static api auth "
    "docs news shop cloud drive vpn admin track go my app"
).split()
PARENTS = [
    f"{w}.{tld}"
    for w in (
        "acme",
        "contoso",
        "fabrikam",
        "initech",
        "globex",
        "umbrella",
        "hooli",
        "wayne",
        "stark",
        "tyrell",
        "cyberdyne",
        "soylent",
    )
    for tld in ("example", "test", "invalid")
]  # 36 invented, never-resolvable domains
PATHS = (
    "index.php wp-admin login.html dl a b c invoice update.exe panel gate.php "
    "images js css files download verify account"
).split()

TOML = """
[daemon]
state_dir = {state}
log_level = "info"

[plugins.bench]
adapter = "file"
path = {path}
format = "text"
batch_size = {batch}
aging_days = {aging}
"""


# --------------------------------------------------------------------------- input


def generate(n: int, seed: int = SEED, mix: list[tuple[str, int]] = MIX) -> Iterator[tuple[str, str]]:
    """Yield n unique, already-canonical (type, value) pairs of the type ``mix``; streaming and deterministic."""
    rng = random.Random(seed)
    types = [t for t, _ in mix]
    cum, acc = [], 0
    for _, w in mix:
        acc += w
        cum.append(acc)
    pick, rand, choice = bisect.bisect_right, rng.random, rng.choice
    for i in range(n):  # i makes every value unique (within its type, which is the identity)
        t = types[pick(cum, rand() * acc)]
        if t == "url":
            host = f"{choice(WORDS)}{rng.randrange(1000)}.{choice(PARENTS)}"
            path = "/".join(choice(PATHS) for _ in range(rng.randrange(1, 4)))
            v = f"{choice(('http', 'https'))}://{host}/{path}/{i:x}"
            if rand() < 0.3:
                v += f"?id={rng.randrange(10**6)}"
        elif t == "domain":
            v = f"{choice(WORDS)}-{i:x}.{choice(PARENTS)}"
        elif t == "ipv4":
            x = (i * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF  # odd multiplier: a bijection mod 2**32
            v = f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"
        elif t == "ipv6":
            x = (i * 0x9E3779B97F4A7C15F39CC061 + 1) & ((1 << 96) - 1)
            v = ipaddress.IPv6Address((0x20010DB8 << 96) | x).compressed
        else:
            v = hashlib.new(t, f"{seed}:{i}".encode()).hexdigest()
        yield t, v


def write_file(path: str, n: int) -> float:
    t0 = time.perf_counter()
    with open(path, "w", buffering=1 << 20) as f:
        f.writelines(f"{v}\n" for _, v in generate(n))
    return time.perf_counter() - t0


def db_bytes(path: str) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- children


def child_pipeline(a: argparse.Namespace) -> dict:
    """Two pulls of the same file, each exactly like one ``ctd run --once``."""
    import trio

    from ctd.config import parse_config
    from ctd.daemon.wiring import allowlist_matcher, db_path
    from ctd.plugins import open_adapter
    from ctd.service import logs as logs
    from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once
    from ctd.store import CACHE_KIB, run_store

    logs.configure_logging("info", stream=sys.stderr)
    from ctd.cli import tune_runtime

    tune_runtime()  # as `ctd run` does
    cfg = parse_config(TOML.format(state=json.dumps(a.dir), path=json.dumps(a.file), batch=BATCH, aging=AGING_DAYS))

    async def once() -> object:  # mirrors ctd/daemon/once.py for a single plugin
        name, plugin = next(iter(cfg.plugins.items()))
        async with trio.open_nursery() as root:
            store = await root.start(run_store, db_path(cfg))
            async with open_adapter(name, plugin) as adapter:
                res = await pull_once(
                    name, plugin, adapter, store, AllowlistRef(allowlist_matcher(cfg)), SourceStatus(name, plugin)
                )
            busy.append(store.statistics().busy_seconds)
            root.cancel_scope.cancel()
        return res

    busy: list[float] = []

    out: dict = {}
    prof = profiler() if a.profile else None
    for phase in ("new", "reingest"):
        if prof:
            prof.start(phase)
        t0, c0 = time.perf_counter(), time.process_time()
        r = trio.run(once)
        out[phase] = {
            "seconds": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,  # all threads: steadier than wall time on a shared machine
            "store_busy_s": busy[-1],
            "new": r.new,
            "updated": r.updated,
            "invalid": r.invalid,
            "batches": r.batches,
            "peak_rss_mb": rss_mb(),
        }
        if prof:
            prof.stop(phase)
    out["rss_mb"] = rss_mb()
    out["db_bytes"] = db_bytes(db_path(cfg))
    out["cache_mb"] = CACHE_KIB / 1024  # the store's page cache cap bounds the RSS growth
    return out


def child_ceiling(a: argparse.Namespace) -> dict:
    """Bare executemany upserts of the same N rows into a table shaped like ``indicator``.

    The one place ctd code talks to SQLite outside ``ctd/store/``: a ceiling to
    compare the pipeline with, built from the store's own DDL and PRAGMAs.
    """
    from ctd.canon import canonicalize
    from ctd.store.schema import MIGRATIONS

    now = int(time.time())
    exp = now + AGING_DAYS * 86400
    rows = [(t, v, now, now, 5, 0, "[]", "", "", exp) for t, v in generate(a.n)]
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    not_canonical = sum(canonicalize(None, v) != (t, v) for t, v, *_ in rows[:5000])
    ddl = next(s for s in MIGRATIONS[0].split(";") if s.strip().startswith("CREATE TABLE indicator"))
    path = os.path.join(a.dir, "ceiling.db")
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "temp_store=MEMORY", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")  # the same PRAGMAs as ctd's store (ctd.store.sql.connect)
    conn.execute(ddl)
    sql = (
        "INSERT INTO indicator (type, value, first_seen, last_seen, reputation, severity, tags, "
        "comments, reference, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(type, value) DO UPDATE SET last_seen=excluded.last_seen, hits=hits+1"
    )
    out: dict = {"not_canonical_of_5000": not_canonical}
    for phase in ("new", "reingest"):
        t0 = time.perf_counter()
        for b in batches:
            conn.execute("BEGIN")
            conn.executemany(sql, b)
            conn.execute("COMMIT")
        out[phase] = {"seconds": time.perf_counter() - t0}
    conn.close()
    out["db_bytes"] = db_bytes(path)
    return out


class profiler:
    """cProfile of every thread the pipeline uses, plus wall time per SQL statement."""

    def __init__(self) -> None:
        import collections
        import cProfile
        import functools
        import threading

        import trio

        self.cp, self.sql, self.profs = cProfile, collections.Counter(), []
        local, orig_run_sync, sql = threading.local(), trio.to_thread.run_sync, self.sql

        def run_sync(fn, *args, **kw):  # worker threads: one profile per thread, enabled per call
            def call(*a):
                if not hasattr(local, "p"):
                    local.p = cProfile.Profile()
                    self.profs.append(local.p)
                return local.p.runcall(fn, *a)

            return orig_run_sync(call, *args, **kw)

        class Timed(sqlite3.Connection):
            def execute(self, q, *a):
                t0 = time.perf_counter()
                try:
                    return super().execute(q, *a)
                finally:
                    sql[" ".join(q.split())[:90]] += time.perf_counter() - t0

            def executemany(self, q, *a):
                t0 = time.perf_counter()
                try:
                    return super().executemany(q, *a)
                finally:
                    sql["(many) " + " ".join(q.split())[:83]] += time.perf_counter() - t0

        trio.to_thread.run_sync = run_sync
        sqlite3.connect = functools.partial(sqlite3.connect, factory=Timed)

    def start(self, phase: str) -> None:
        self.sql.clear()
        self.profs.clear()
        self.main = self.cp.Profile()
        self.profs.append(self.main)
        self.main.enable()

    def stop(self, phase: str) -> None:
        import pstats

        self.main.disable()
        total = sum(self.sql.values())
        print(f"\n=== {phase}: wall time per SQL statement (store thread), total {total:.2f}s")
        for q, s in self.sql.most_common(12):
            print(f"{s:8.2f}s {100 * s / total:5.1f}%  {q}")
        if phase != "new":
            return  # cProfile tables for the first pull only (the headline figure)
        stats = pstats.Stats(self.main, stream=sys.stdout)
        for p in self.profs[1:]:
            stats.add(p)
        for key in ("cumulative", "tottime"):
            print(f"\n=== {phase}: top 25 by {key} (main thread + worker threads merged)")
            stats.sort_stats(key).print_stats(25)


# --------------------------------------------------------------------------- parent


def run_child(kind: str, n: int, workdir: str, file: str, profile: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--n", str(n), "--dir", workdir, "--file", file]
    if profile:
        subprocess.run(cmd + ["--profile"], check=True)
        return {}
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{kind} child failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench(n: int, workdir: str) -> dict:
    d = os.path.join(workdir, f"n{n}")
    os.makedirs(os.path.join(d, "state"), exist_ok=True)
    file = os.path.join(d, "iocs.txt")
    gen_s = write_file(file, n)
    pipe = run_child("pipeline", n, os.path.join(d, "state"), file)
    ceil = run_child("ceiling", n, d, file)
    return {
        "n": n,
        "file_mb": os.path.getsize(file) / 1e6,
        "gen_s": gen_s,
        "new_per_s": n / pipe["new"]["seconds"],
        "new_s": pipe["new"]["seconds"],
        "new_cpu_s": pipe["new"]["cpu_s"],
        "reingest_cpu_s": pipe["reingest"]["cpu_s"],
        "reingest_per_s": n / pipe["reingest"]["seconds"],
        "reingest_s": pipe["reingest"]["seconds"],
        "rss_mb": pipe["rss_mb"],
        "db_bytes_per_ioc": pipe["db_bytes"] / n,
        "db_mb": pipe["db_bytes"] / 1e6,
        "ceiling_per_s": n / ceil["new"]["seconds"],
        "ceiling_s": ceil["new"]["seconds"],
        "ceiling_reupsert_per_s": n / ceil["reingest"]["seconds"],
        "ceiling_db_bytes_per_ioc": ceil["db_bytes"] / n,
        "ratio": ceil["new"]["seconds"] / pipe["new"]["seconds"],
        "pipeline_counts": {k: pipe[k] for k in ("new", "reingest")},
        "not_canonical_of_5000": ceil["not_canonical_of_5000"],
        "cache_mb": pipe["cache_mb"],
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(r: dict) -> None:
    c = r["pipeline_counts"]
    print(f"\nN = {r['n']:,} IoCs: file {r['file_mb']:.1f} MB, generated in {r['gen_s']:.1f}s (not timed)")

    def line(label: str, figure: str, target: str = "", ok: bool | None = None) -> None:
        print(f"  {label:<22}{figure:<34}{target:<20}{'' if ok is None else verdict(ok)}".rstrip())

    line(
        "new IoCs/s end to end",
        f"{r['new_per_s']:>10,.0f}/s ({r['new_s']:.2f}s)",
        f"target >= {T_NEW:,}",
        r["new_per_s"] >= T_NEW,
    )
    line(
        "re-ingest IoCs/s",
        f"{r['reingest_per_s']:>10,.0f}/s ({r['reingest_s']:.2f}s)",
        f"target >= {T_REINGEST:,}",
        r["reingest_per_s"] >= T_REINGEST,
    )
    line("process CPU time", f"{r['new_cpu_s']:>10.2f}s new, {r['reingest_cpu_s']:.2f}s re-ingest")
    line("peak RSS (pipeline)", f"{r['rss_mb']:>10,.0f} MB", f"target <= {T_RSS} MB", r["rss_mb"] <= T_RSS)
    line("ceiling (bare upsert)", f"{r['ceiling_per_s']:>10,.0f}/s ({r['ceiling_s']:.2f}s)")
    line("pipeline / ceiling", f"{r['ratio']:>10.2f}", f"target >= {T_RATIO}", r["ratio"] >= T_RATIO)
    line("DB bytes per IoC", f"{r['db_bytes_per_ioc']:>10,.0f} B ({r['db_mb']:.0f} MB)")
    print(
        f"  (ceiling: all-conflict re-upsert {r['ceiling_reupsert_per_s']:,.0f}/s, "
        f"bare table {r['ceiling_db_bytes_per_ioc']:.0f} B/IoC; same PRAGMAs as ctd's store)"
    )
    print(
        f"  pulls: first new={c['new']['new']:,} updated={c['new']['updated']:,} invalid={c['new']['invalid']:,}; "
        f"second new={c['reingest']['new']:,} updated={c['reingest']['updated']:,}"
    )
    if c["new"]["new"] != r["n"] or c["new"]["invalid"] or r["not_canonical_of_5000"]:
        print(
            f"  WARNING: generated values were not all new/valid/canonical "
            f"(non-canonical in a 5000 sample: {r['not_canonical_of_5000']})"
        )


def table(results: list[dict]) -> None:
    print("\n        N    new/s  reingest/s  ceiling/s  ratio  RSS MB  B/IoC")
    for r in results:
        print(
            f"{r['n']:>9,} {r['new_per_s']:>8,.0f} {r['reingest_per_s']:>11,.0f} {r['ceiling_per_s']:>10,.0f} "
            f"{r['ratio']:>6.2f} {r['rss_mb']:>7,.0f} {r['db_bytes_per_ioc']:>6,.0f}"
        )
    lo, hi = results[0], results[-1]
    grow = hi["rss_mb"] - lo["rss_mb"]
    # ctd's SQLite page cache fills up to its cap as the database outgrows it, then
    # stays there: growth within that cap (+10 MB noise) is bounded, anything beyond is not.
    ok = grow <= hi["cache_mb"] + 10
    print(
        f"peak RSS {lo['rss_mb']:.0f} MB at {lo['n']:,} -> {hi['rss_mb']:.0f} MB at {hi['n']:,} ({grow:+.0f} MB; "
        f"store page cache cap {hi['cache_mb']:.0f} MB): not growing with N  {verdict(ok)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of IoCs (default 1,000,000)")
    ap.add_argument("--sizes", help="comma-separated N values to run in turn, e.g. 1000000,3000000")
    ap.add_argument("--dir", help="work directory (default: a temporary directory under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--profile", action="store_true", help="profile one pipeline run instead of benchmarking")
    ap.add_argument("--child", choices=("pipeline", "ceiling"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        out = (child_pipeline if a.child == "pipeline" else child_ceiling)(a)
        print(json.dumps(out))
        return

    m = benchjson.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; Python {m['python']}, SQLite {m['sqlite']}")
    workdir = a.dir or tempfile.mkdtemp(prefix="ctd-bench-", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    try:
        if a.profile:
            d = os.path.join(workdir, f"profile{a.n}")
            os.makedirs(os.path.join(d, "state"), exist_ok=True)
            file = os.path.join(d, "iocs.txt")
            write_file(file, a.n)
            print(f"profiling one pipeline run at N = {a.n:,} (cProfile slows the Python parts)")
            run_child("pipeline", a.n, os.path.join(d, "state"), file, profile=True)
            return
        sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else [a.n]
        results = []
        for n in sizes:
            results.append(bench(n, workdir))
            report(results[-1])
            if not a.keep:  # free the disk before the next size
                shutil.rmtree(os.path.join(workdir, f"n{n}"), ignore_errors=True)
        if len(results) > 1:
            table(results)
        benchjson.write(a.json, "ingest", {"sizes": results, "targets": TARGETS}, m)
    finally:
        if a.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
