#!/usr/bin/env python3
"""Sharing benchmark: full-replace passes over a large store, their peak memory, and a rule dry run.

    python bench/sharing.py --n 1000000
    python bench/sharing.py --sizes 1000000,3000000 --json out.json

For each size N, a child process fills a store with N active IoCs of mixed types
(the generator of bench/ingest.py, ingested through the store API in 10k-row
batches) and times ``ctdctl rules test`` on a rule matching about half of them
(``type in (url, ipv4)``: 35% + 15% of the mix). A second, fresh child process
then opens that store, as the daemon would, and times with the same store actor:

* one full sharing pass of that rule to a ``file`` destination (the whole list
  streamed from the store to the file, the delivery ledger updated), in IoCs/s,
  and the peak RSS of that process (the pass's own memory: the fill ran elsewhere);
* a pass with nothing changed (no commit, no expiry, no rule change): the change
  marks say so and nothing is planned (target <= 50 ms);
* a pass that plans again although nothing changed (``Sharer.forget``): the list
  is streamed and hashed, found unchanged and not rewritten.

Targets (issue 14): peak RSS <= 300 MB at every size and within +15% from the
smallest to the largest size. Information only: the script exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

RULE = "type in (url, ipv4)"
T_RSS, T_GROWTH, T_NOOP = 300, 0.15, 0.050
CONFIG = """
[daemon]
state_dir = "{state}"
[plugins.feed]
adapter = "file"
pull = false
[plugins.lists]
adapter = "file"
pull = false
[rules.half]
filter = "{rule}"
[sharing.bench]
sources = ["feed"]
rule = "half"
destination = "lists"
action = "write"
params = {{ path = "{out}", format = "text" }}
"""


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "arch": platform.machine(),
    }


async def fill(store, n: int) -> float:
    from ingest import generate

    from ctd.model import Sighting, now
    from ctd.store import IngestBatch, to_stage_rows

    t0 = time.perf_counter()
    at = now()
    batch: list[Sighting] = []
    first = True
    for i, (typ, value) in enumerate(generate(n)):
        batch.append(Sighting(type=typ, value=value, last_seen=at - i % 86400))
        if len(batch) == 10_000 or i == n - 1:
            rows = to_stage_rows(batch, now=at, reputation=None, extra_tags=(), allowlisted=None)
            await store.ingest(
                IngestBatch(
                    source="feed",
                    rows=rows,
                    policy="last_seen",
                    aging_days=90,
                    now=at,
                    fresh=first,
                    snapshot_end=False,
                    sub=None,
                    cursor=None,
                )
            )
            first = False
            batch.clear()
    return time.perf_counter() - t0


def _config(workdir: str):
    from ctd.config import parse_config

    out_path = os.path.join(workdir, "out", "half.txt")
    return parse_config(CONFIG.format(state=workdir, rule=RULE, out=out_path)), out_path


async def child_fill(workdir: str, n: int) -> dict:
    import trio

    from ctd.model import now
    from ctd.rules.compiler import Rule
    from ctd.store import Selection, run_store

    cfg, _ = _config(workdir)
    res: dict = {}
    async with trio.open_nursery() as root:
        store = await root.start(run_store, os.path.join(workdir, "ctd.db"))
        res["fill_s"] = await fill(store, n)
        t0 = time.perf_counter()  # ctdctl rules test: the same store call the daemon makes
        test = await store.rule_test(Selection(rule=Rule(cfg.rules["half"].filter), at=now()))
        res["rules_test_s"] = time.perf_counter() - t0
        res["matching"] = test["total"]
        root.cancel_scope.cancel()
    return res


async def child_pass(workdir: str) -> dict:
    import trio

    from ctd.plugins import open_adapter
    from ctd.sharing.actor import Sharer
    from ctd.store import run_store

    cfg, out_path = _config(workdir)
    res: dict = {}
    async with trio.open_nursery() as root:
        store = await root.start(run_store, os.path.join(workdir, "ctd.db"))
        res["rss_open_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        async with open_adapter("lists", cfg.plugins["lists"]) as adapter:
            sharer = Sharer("bench", cfg.sharing["bench"], cfg.rules["half"], cfg.plugins["lists"], adapter, store)
            t0 = time.perf_counter()
            first = await sharer.share_once()
            res["pass_s"] = time.perf_counter() - t0
            res["shared"] = first.pushed
            res["rss_pass_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            t0 = time.perf_counter()
            second = await sharer.share_once()
            res["noop_pass_s"] = time.perf_counter() - t0
            res["noop_unchanged"] = second.unchanged
            mtime = os.stat(out_path).st_mtime_ns
            sharer.forget()
            t0 = time.perf_counter()
            third = await sharer.share_once()
            res["replanned_unchanged_pass_s"] = time.perf_counter() - t0
            res["replanned_rewrote"] = not third.unchanged or os.stat(out_path).st_mtime_ns != mtime
        root.cancel_scope.cancel()
    res["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(n: int, keep: bool) -> dict:
    workdir = tempfile.mkdtemp(prefix="ctd-bench-sharing-")
    try:
        r = run_child("fill", workdir, str(n))
        r.update(run_child("pass", workdir))
        r["n"] = n
        return r
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


def report(results: list[dict]) -> dict:
    figures: dict = {"sizes": {}}
    for r in results:
        n = r["n"]
        print(f"store: {n:,} active IoCs (filled in {r['fill_s']:.1f}s); rule {RULE!r} matches {r['matching']:,}")
        print(f"  rules test (dry run)             {r['rules_test_s']:8.2f}s")
        print(
            f"  full pass to file (streamed)     {r['pass_s']:8.2f}s  {r['shared'] / r['pass_s']:>10,.0f} IoCs/s"
            f"  ({r['shared']:,} shared, {r['list_lines']:,} lines written)"
        )
        ok = "PASS" if r["rss_peak_mb"] <= T_RSS else "MISS"
        print(
            f"  peak RSS of the pass process     {r['rss_peak_mb']:8.0f} MB   (store opened: {r['rss_open_mb']:.0f} MB)"
            f"   target <= {T_RSS} MB  {ok}"
        )
        ok = "PASS" if r["noop_pass_s"] <= T_NOOP and r["noop_unchanged"] else "MISS"
        print(
            f"  pass with nothing changed        {r['noop_pass_s'] * 1000:8.1f} ms"
            f"                      target <= {T_NOOP * 1000:.0f} ms  {ok}"
        )
        print(
            f"  re-planned pass, list unchanged  {r['replanned_unchanged_pass_s']:8.2f}s"
            f"  (list rewritten: {r['replanned_rewrote']})"
        )
        figures["sizes"][str(n)] = {
            "fill_s": r["fill_s"],
            "rules_test_s": r["rules_test_s"],
            "matching": r["matching"],
            "full_pass_s": r["pass_s"],
            "full_pass_iocs_per_s": r["shared"] / r["pass_s"],
            "shared": r["shared"],
            "peak_rss_mb": r["rss_peak_mb"],
            "rss_after_open_mb": r["rss_open_mb"],
            "noop_pass_ms": r["noop_pass_s"] * 1000,
            "replanned_unchanged_pass_s": r["replanned_unchanged_pass_s"],
            "replanned_rewrote": r["replanned_rewrote"],
        }
    if len(results) > 1:
        low, high = results[0]["rss_peak_mb"], results[-1]["rss_peak_mb"]
        growth = high / low - 1
        ok = "PASS" if growth <= T_GROWTH else "MISS"
        print(
            f"peak RSS {results[0]['n']:,} -> {results[-1]['n']:,}: {low:.0f} -> {high:.0f} MB"
            f" ({growth:+.1%})   target <= +{T_GROWTH:.0%}  {ok}"
        )
        figures["rss_growth"] = growth
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import trio

        from ctd.cli import tune_runtime
        from ctd.service import logs

        logs.configure_logging("warning")
        tune_runtime()  # as `ctd run` does
        if sys.argv[2] == "fill":
            res = trio.run(child_fill, sys.argv[3], int(sys.argv[4]))
        else:
            res = trio.run(child_pass, sys.argv[3])
            with open(_config(sys.argv[3])[1], "rb") as f:
                res["list_lines"] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="active IoCs in the store")
    ap.add_argument("--sizes", help="several store sizes, comma-separated (e.g. 1000000,3000000)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else [a.n]
    results = [measure(n, a.keep) for n in sizes]
    figures = report(results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "sharing", "machine": machine(), "figures": figures}, f, indent=2)


if __name__ == "__main__":
    main()
