#!/usr/bin/env python3
"""Cost growth with the store's size: one store grown to 1M, 3M, 10M IoCs from five overlapping sources.

    python bench/scale.py                                  # --sizes 1M,3M,10M
    python bench/scale.py --sizes 1M,3M --json build/bench/scale.json

The real daemon (``python -m ctd run``) pulls five ``file`` sources of mixed
types (bench/ingest.py's generator) that overlap: at size N

    src0  the first 1M values (a curated list that does not grow: the 1M-entry full-replace list)
    src1  [0, 0.5 N)     src2  [0.4 N, 0.8 N)     src3  [0.7 N, N)
    src4  every 10th value, aging_days = 1 (what the expiry sweep finds expired)

Each size is one stage: the feed files are rewritten for N (a file source is a
full snapshot, so every stage re-reads what earlier ones reported: re-reports
and new values mixed, as in production), the daemon is started on the same
state directory and the stage's figures are taken:

- ingest: rows (sightings) per second until every source's pull completed;
- DB bytes per IoC, and the daemon's peak RSS (VmHWM) over the stage;
- latency over the control socket (the client in this process, no ``ctdctl``
  start-up): ``status`` and ``indicators show`` (median and max of 20),
  ``indicators search`` first page (100 rows), ``rules test`` of a rule that
  selects everything, and ``sharing sync`` of a full-replace file list of
  src0's 1M entries;
- housekeeping, with the daemon stopped: a child process opens the store and
  runs the expiry sweep (``Store.expire``, two days ahead so src4's entries
  expire) while an ingest of one value is sent every 5 ms; the sweep's time and
  the longest any of those ingests waited.

Targets at 10M (issue 14): RSS <= 300 MB, status/show <= 20 ms, rules test <=
10 s, bytes/IoC <= 220, a sweep <= 2 s blocking ingest <= 100 ms at a time.
They are information: the script exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import benchjson  # noqa: E402
from ingest import generate  # noqa: E402

from ctd.ctdctl.client import ConnectError, ControlClient, DaemonError  # noqa: E402

LIST_1M = 1_000_000
SOURCES = ("src0", "src1", "src2", "src3", "src4")
T_RSS_MB, T_QUERY_MS, T_RULES_S, T_BYTES, T_SWEEP_S, T_BLOCK_MS = 300, 20, 10, 220, 2, 100


def size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def write_feeds(work: Path, n: int) -> dict[str, int]:
    """The five snapshot files for size N; how many lines each has."""
    files = {name: open(work / f"{name}.txt", "w", buffering=1 << 20) for name in SOURCES}
    counts = dict.fromkeys(SOURCES, 0)
    a, b, c, d = int(0.5 * n), int(0.4 * n), int(0.8 * n), int(0.7 * n)
    try:
        for i, (_, v) in enumerate(generate(n)):
            line = v + "\n"
            for name, hit in (
                ("src0", i < LIST_1M),
                ("src1", i < a),
                ("src2", b <= i < c),
                ("src3", i >= d),
                ("src4", i % 10 == 0),
            ):
                if hit:
                    files[name].write(line)
                    counts[name] += 1
    finally:
        for f in files.values():
            f.close()
    return counts


def config(work: Path, sharing: bool) -> Path:
    """The daemon's config; ``sharing``: with the full-replace list (added once the stage's pulls are done,
    so its passes do not run between the pulls' batches and the ingest rate is the store's alone)."""
    plugins = "".join(
        f'[plugins.{name}]\nadapter = "file"\npath = "{work}/{name}.txt"\nformat = "text"\nbatch_size = 20000\n'
        f'sync_interval = "24h"\naging_days = {1 if name == "src4" else 90}\n\n'
        for name in SOURCES
    )
    path = work / "ctd.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{work}/var"\nsocket = "{work}/ctd.sock"\nlog_level = "warning"\n'
        'housekeeping_interval = "24h"\n\n'
        f'{plugins}[plugins.lists]\nadapter = "file"\npull = false\n\n'
        '[rules.everything]\nfilter = "reputation >= 0"\n\n'
        '[rules.list1m]\nfilter = "source = src0"\n\n'
        + (
            '[sharing.full1m]\nsources = ["src0"]\nrule = "list1m"\ndestination = "lists"\naction = "write"\n'
            f'params = {{ path = "{work}/out/list1m.txt", format = "text" }}\ninterval = "24h"\n'
            if sharing
            else ""
        )
    )
    return path


def start_daemon(work: Path, cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CTD_SOCKET", "CTD_CONFIG"):
        env.pop(key, None)
    log = open(work / "daemon.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ctd", "run", "--config", str(cfg)], cwd=HERE.parent, env=env, stdout=log, stderr=log
    )


def call(sock: str, cmd: str, timeout: float | None = 600.0, **args: Any) -> Any:
    while True:
        try:
            return ControlClient(sock, timeout=timeout).call(cmd, **args)
        except DaemonError as exc:
            starting = "still starting" in exc.message or "no pulling source" in exc.message
            if exc.code != "busy" and not starting:
                raise
        except ConnectError as exc:
            if "temporarily unavailable" not in str(exc) and "No such file" not in str(exc):
                if "refused" not in str(exc):
                    raise
        time.sleep(0.05)


def pull_all(sock: str, proc: subprocess.Popen[bytes], first: bool) -> None:
    """Every source pulled once, all at the same time (``ctdctl sync`` of each; it answers when the pull is done)."""
    while proc.poll() is None:
        try:
            call(sock, "status", timeout=60)
            break
        except (ConnectError, OSError):
            time.sleep(0.2)
    if proc.poll() is not None:
        sys.exit(f"the daemon exited ({proc.returncode}); see its log")
    if first:  # a new store: each source pulls at start by itself
        while True:
            st = call(sock, "status", timeout=60)
            if all(x["last_success"] for x in st["sources"] if x["name"] in SOURCES):
                return
            if proc.poll() is not None:
                sys.exit(f"the daemon exited ({proc.returncode}); see its log")
            time.sleep(0.2)
    with ThreadPoolExecutor(len(SOURCES)) as pool:
        for res in pool.map(lambda name: call(sock, "sync", timeout=None, source=name), SOURCES):
            if res.get("error"):
                sys.exit(f"a pull failed: {res}")


def timed(fn: Any, times: int) -> tuple[float, float]:
    """Median and max latency of ``times`` calls, in ms."""
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out), max(out)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_pass(sock: str) -> float:
    """Add the full-replace sharing (reload) and wait for its first pass: seconds."""
    t0, since = time.perf_counter(), time.time() - 1
    call(sock, "reload")
    while True:
        try:
            sh = call(sock, "sharing.show", name="full1m")
        except DaemonError:
            time.sleep(0.2)
            continue
        done = max(_epoch(sh.get("last_success")), _epoch(sh.get("last_run")) if sh.get("last_error") else 0)
        if done >= since:  # this stage's pass, not the one an earlier stage left in the store
            return time.perf_counter() - t0
        time.sleep(0.2)


def _epoch(value: Any) -> float:
    """An ISO time from status (or None) as epoch seconds."""
    if not value:
        return 0.0
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def stage(work: Path, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    lines = write_feeds(work, n)
    out: dict[str, Any] = {"n": n, "rows": sum(lines.values()), "rows_by_source": lines}
    out["feeds_written_s"] = round(time.perf_counter() - t0, 1)
    sock = str(work / "ctd.sock")
    t0 = time.perf_counter()
    first = not (work / "var" / "ctd.db").exists()
    proc = start_daemon(work, config(work, sharing=False))
    try:
        pull_all(sock, proc, first)
        took = time.perf_counter() - t0
        out["ingest_s"] = took
        out["ingest_rows_per_s"] = out["rows"] / took
        st = call(sock, "status")
        out["indicators"] = st["indicators"]["total"]
        out["status_ms"] = timed(lambda: call(sock, "status"), 20)
        rng = random.Random(n)
        picks = [v for i, (_, v) in enumerate(generate(n)) if i % max(1, n // 20) == 0][:20]
        rng.shuffle(picks)
        it = iter(picks * 2)
        out["show_ms"] = timed(lambda: call(sock, "indicators.show", value=next(it)), 20)
        out["search_first_page_ms"] = timed(lambda: call(sock, "indicators.search", limit=100), 5)
        t = time.perf_counter()
        res = call(sock, "rules.test", name="everything")
        out["rules_test_s"] = time.perf_counter() - t
        out["rules_test_total"] = res.get("total")
        config(work, sharing=True)
        out["full_replace_first_pass_s"] = first_pass(sock)
        t = time.perf_counter()
        res = call(sock, "sharing.sync", timeout=None, name="full1m")
        out["full_replace_1m_s"] = time.perf_counter() - t
        out["full_replace_result"] = {k: v for k, v in res.items() if isinstance(v, (int, float, str, type(None)))}
        out["peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    db = work / "var" / "ctd.db"
    out["db_bytes"] = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
    out["bytes_per_ioc"] = out["db_bytes"] / max(1, out["indicators"])
    out.update(sweep(db))
    return out


def sweep(db: Path) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--sweep-child", str(db)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"sweep child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def sweep_child(db: str) -> dict[str, Any]:
    """The expiry sweep on the stage's store while one-value ingests arrive every 5 ms."""
    import trio

    from ctd.model import Sighting
    from ctd.store import IngestBatch, run_store, to_stage_rows

    ahead = int(time.time()) + 2 * 86400  # src4's one-day aging has run out
    waits: list[float] = []
    result: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store = await nursery.start(run_store, db)
            done = trio.Event()

            async def probe() -> None:
                i = 0
                while not done.is_set():
                    rows = to_stage_rows(
                        [Sighting(type="domain", value=f"probe{i}.example")],
                        now=int(time.time()),
                        reputation=None,
                        extra_tags=(),
                        allowlisted=None,
                    )
                    batch = IngestBatch(
                        source="probe",
                        rows=rows,
                        policy="last_seen",
                        aging_days=1,
                        now=int(time.time()),
                        fresh=False,
                        snapshot_end=False,
                        sub=None,
                        cursor=None,
                    )
                    t = time.perf_counter()
                    await store.ingest(batch)
                    waits.append(time.perf_counter() - t)
                    i += 1
                    await trio.sleep(0.005)

            nursery.start_soon(probe)
            await trio.sleep(0.2)
            before = len(waits)
            t = time.perf_counter()
            result["expired"] = await store.expire(ahead)
            result["sweep_s"] = time.perf_counter() - t
            done.set()
            during = waits[before:]
            result["ingests_during_sweep"] = len(during)
            result["sweep_max_ingest_wait_ms"] = max(during) * 1000 if during else None
            result["idle_ingest_wait_ms"] = statistics.median(waits[:before]) * 1000 if before else None
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(results: list[dict[str, Any]]) -> None:
    print(
        "\n        N  ingest rows/s  B/IoC  RSS MB  status ms  show ms  search ms  rules test s"
        "  full-replace 1M s (first/resync)  sweep s  max block ms"
    )
    for r in results:
        print(
            f"{r['n']:>9,} {r['ingest_rows_per_s']:>14,.0f} {r['bytes_per_ioc']:>6,.0f} {r['peak_rss_mb']:>7,.0f} "
            f"{r['status_ms'][0]:>6.1f}/{r['status_ms'][1]:<4.0f}{r['show_ms'][0]:>5.1f}/{r['show_ms'][1]:<4.0f}"
            f"{r['search_first_page_ms'][0]:>8.1f} {r['rules_test_s']:>12.2f} "
            f"{r['full_replace_first_pass_s']:>19.2f}/{r['full_replace_1m_s']:<13.2f} "
            f"{r['sweep_s']:>8.2f} {r['sweep_max_ingest_wait_ms'] or 0:>13.0f}"
        )
    r = results[-1]
    print(f"\ntargets at {r['n']:,} (issue 14; the 10M ones):")
    print(f"  peak RSS {r['peak_rss_mb']:.0f} MB <= {T_RSS_MB}: {verdict(r['peak_rss_mb'] <= T_RSS_MB)}")
    print(
        f"  status {r['status_ms'][0]:.1f} ms, show {r['show_ms'][0]:.1f} ms (median) <= {T_QUERY_MS}: "
        f"{verdict(max(r['status_ms'][0], r['show_ms'][0]) <= T_QUERY_MS)}"
    )
    print(f"  rules test {r['rules_test_s']:.2f} s <= {T_RULES_S}: {verdict(r['rules_test_s'] <= T_RULES_S)}")
    print(f"  bytes/IoC {r['bytes_per_ioc']:.0f} <= {T_BYTES}: {verdict(r['bytes_per_ioc'] <= T_BYTES)}")
    block = r["sweep_max_ingest_wait_ms"] or 0
    print(
        f"  sweep {r['sweep_s']:.2f} s <= {T_SWEEP_S}, longest ingest wait {block:.0f} ms <= {T_BLOCK_MS}: "
        f"{verdict(r['sweep_s'] <= T_SWEEP_S and block <= T_BLOCK_MS)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,3M,10M", help="store sizes in turn (default 1M,3M,10M)")
    ap.add_argument("--dir", help="work directory (default: a temporary directory under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--sweep-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sweep_child:
        print(json.dumps(sweep_child(a.sweep_child)))
        return
    sizes = [size(s) for s in a.sizes.split(",")]
    if sizes != sorted(sizes):
        sys.exit("--sizes must grow: each stage adds to the store of the one before")
    mach = benchjson.machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gb']} GB RAM, load {mach['load_avg_1m']}")
    work = Path(a.dir or tempfile.mkdtemp(prefix="ctd-scale-", dir="/tmp")).resolve()
    (work / "out").mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            results.append(stage(work, n))
            r = results[-1]
            print(
                f"N = {n:,}: {r['rows']:,} rows ingested in {r['ingest_s']:.1f} s, {r['indicators']:,} indicators "
                f"(stage {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            benchjson.write(a.json, "scale", {"sizes": results}, mach)  # after each stage: a long run keeps its figures
        table(results)
    finally:
        if a.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
