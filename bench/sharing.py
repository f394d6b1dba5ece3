#!/usr/bin/env python3
"""Sharing benchmark: one full sharing pass over a large store, and a rule dry run.

    python bench/sharing.py --n 1000000

Fills a store with N active IoCs of mixed types (the generator of
bench/ingest.py, ingested through the store API in 10k-row batches), then,
with the same store actor:

* times ``ctdctl rules test`` on a rule matching about half of them
  (``type in (url, ipv4)``: 35% + 15% of the mix), and
* times one full sharing pass of that rule to a ``file`` destination (the whole
  list written atomically, the delivery ledger updated), reported in IoCs/s,
* and a second pass with nothing changed (the list is not rewritten).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trio
from ingest import generate

from ctd.config import parse_config
from ctd.model import Sighting, now
from ctd.plugins import open_adapter
from ctd.rules.compiler import Rule
from ctd.sharing.actor import Sharer
from ctd.store import IngestBatch, Selection, Store, run_store, to_stage_rows

RULE = "type in (url, ipv4)"
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


async def fill(store: Store, n: int) -> float:
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


async def measure(workdir: str, n: int) -> dict:
    out_path = os.path.join(workdir, "out", "half.txt")
    cfg = parse_config(CONFIG.format(state=workdir, rule=RULE, out=out_path))
    sh = cfg.sharing["bench"]
    res: dict = {}
    async with trio.open_nursery() as root:
        store = await root.start(run_store, os.path.join(workdir, "ctd.db"))
        res["fill_s"] = await fill(store, n)
        # ctdctl rules test: the same store call the daemon makes
        rule = Rule(cfg.rules["half"].filter)
        t0 = time.perf_counter()
        test = await store.rule_test(Selection(rule=rule, at=now()))
        res["rules_test_s"] = time.perf_counter() - t0
        res["matching"] = test["total"]
        async with open_adapter("lists", cfg.plugins["lists"]) as adapter:
            sharer = Sharer("bench", sh, cfg.rules["half"], cfg.plugins["lists"], adapter, store)
            t0 = time.perf_counter()
            first = await sharer.share_once()
            res["pass_s"] = time.perf_counter() - t0
            res["shared"] = first.pushed
            t0 = time.perf_counter()
            second = await sharer.share_once()
            res["unchanged_pass_s"] = time.perf_counter() - t0
            res["second_unchanged"] = second.unchanged
        root.cancel_scope.cancel()
    res["list_lines"] = (await trio.Path(out_path).read_text()).count("\n")
    return res


def main() -> None:
    from ctd.cli import tune_runtime
    from ctd.service import logs as logs

    logs.configure_logging("warning")
    tune_runtime()  # as `ctd run` does
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="ctd-bench-sharing-")
    try:
        r = trio.run(measure, workdir, a.n)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"store: {a.n:,} active IoCs (filled in {r['fill_s']:.1f}s); rule {RULE!r} matches {r['matching']:,}")
    ok = "PASS" if r["rules_test_s"] < 2 else "MISS"
    print(f"  rules test (dry run)        {r['rules_test_s']:8.2f}s                 target < 2 s   {ok}")
    print(
        f"  full sharing pass to file   {r['pass_s']:8.2f}s  {r['shared'] / r['pass_s']:>10,.0f} IoCs/s"
        f"  ({r['shared']:,} shared, {r['list_lines']:,} lines written)"
    )
    print(f"  pass with nothing changed   {r['unchanged_pass_s']:8.2f}s  (list rewritten: {not r['second_unchanged']})")
    print(f"  peak RSS                    {rss:8.0f} MB")


if __name__ == "__main__":
    main()
