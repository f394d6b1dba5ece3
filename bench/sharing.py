#!/usr/bin/env python3
"""Sharing benchmark: rule dry runs as users set them up, one full sharing pass, ingest during dry runs.

    python bench/sharing.py --n 1000000
    python bench/sharing.py --n 1000000 --json            # also one JSON line on stdout
    python bench/sharing.py --n 1000000 --json out.json   # ... or into a file

Fills a store with N active IoCs of mixed types, half of them URLs (the
generator of bench/ingest.py with a URL-heavy mix, ingested through the store
API in 10k-row batches as source ``feed``; a tenth of the URLs are reported
again by ``misp`` and a fiftieth by ``ns``, a destination that also pulls, so
sources and loop prevention narrow what each sharing sends). Then, with the
same store actor:

* times ``ctdctl rules test`` (the same code as the control command) of the
  rule ``type = url`` in three configurations: a bare rule no sharing uses;
  the rule feeding one full-replace list file capped at 300,000 entries; the
  rule feeding three destinations with different caps, sizes and sources (that
  list file, an EDL capped at 150,000 entries and 4 MB, a Netskope URL list
  with its own 300,000-entry / 7 MiB caps, JSON-sized);
* times one full sharing pass of ``type in (url, ipv4)`` to a ``file``
  destination (the whole list written atomically, the delivery ledger
  updated), reported in IoCs/s, and a second pass with nothing changed;
* ingests a second feed (``--ingest`` IoCs in 20k-row batches, the feed
  default) alone, then as many while three-destination dry runs repeat; then
  100 small batches (100 IoCs, 50 ms apart) alone and 100 during dry runs,
  and reports the longest any ingest batch waited for dry-run requests (the
  chunks the store answered between its asking and its answer, as the store
  timed them) and the longest a single dry-run request held the store.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trio
from ingest import SEED, generate, machine

from ctd.config import parse_config
from ctd.control.commands_sharing import dry_run
from ctd.model import Sighting, now
from ctd.plugins import open_adapter
from ctd.rules.compiler import Rule
from ctd.sharing.actor import Sharer
from ctd.store import IngestBatch, Selection, Store, run_store, to_stage_rows
from ctd.store.requests import PreviewPart

MIX = [("url", 50), ("domain", 15), ("ipv4", 12), ("ipv6", 3), ("sha256", 10), ("md5", 7), ("sha1", 3)]
RULE = "type in (url, ipv4)"
TARGET_S = 2.0  # dry run at 1M
STALL_TARGET_S = 0.1  # longest an ingest batch may wait for a dry run
CONFIG = """
[daemon]
state_dir = "{state}"
[tenants.bench]
url = "https://127.0.0.1:9"
token = "unused: nothing is sent"
[plugins.feed]
adapter = "file"
pull = false
[plugins.misp]
adapter = "file"
pull = false
[plugins.lists]
adapter = "file"
pull = false
[plugins.fw]
adapter = "edl"
pull = false
bind = "127.0.0.1:9"
[plugins.ns]
adapter = "netskope"
tenant = "bench"
[rules.half]
filter = "{rule}"
[rules.bare]
filter = "type = url"
[rules.one]
filter = "type = url"
[rules.three]
filter = "type = url"
[sharing.bench]
sources = ["feed"]
rule = "half"
destination = "lists"
action = "write"
params = {{ path = "{out}", format = "text" }}
[sharing.one-list]
sources = ["feed"]
rule = "one"
destination = "lists"
action = "write"
params = {{ path = "{out}.one", max_entries = 300000 }}
[sharing.three-list]
sources = ["feed"]
rule = "three"
destination = "lists"
action = "write"
params = {{ path = "{out}.three", max_entries = 300000 }}
[sharing.three-edl]
sources = ["feed", "misp"]
rule = "three"
destination = "fw"
action = "list"
params = {{ name = "urls", max_entries = 150000, max_bytes = 4000000 }}
[sharing.three-netskope]
sources = ["feed", "misp"]
rule = "three"
destination = "ns"
action = "url_list"
params = {{ list = "ctd-urls" }}
"""
DRY_RUNS = {"bare rule": "bare", "one capped full-replace list": "one", "three destinations, different caps": "three"}


def batch(source: str, sightings: list[Sighting], at: int, fresh: bool) -> IngestBatch:
    rows = to_stage_rows(sightings, now=at, reputation=None, extra_tags=(), allowlisted=None)
    return IngestBatch(
        source=source,
        rows=rows,
        policy="last_seen",
        aging_days=90,
        now=at,
        fresh=fresh,
        snapshot_end=False,
        sub=None,
        cursor=None,
    )


async def fill(store: Store, n: int) -> float:
    """N IoCs from ``feed``; every 10th URL also from ``misp``, every 50th from ``ns``."""
    t0 = time.perf_counter()
    at = now()
    todo: dict[str, list[Sighting]] = {"feed": [], "misp": [], "ns": []}
    first = {k: True for k in todo}
    urls = 0
    for i, (typ, value) in enumerate(generate(n, mix=MIX)):
        sighting = Sighting(type=typ, value=value, last_seen=at - i % 86400)
        todo["feed"].append(sighting)
        if typ == "url":
            urls += 1
            if urls % 10 == 0:
                todo["misp"].append(sighting)
            if urls % 50 == 0:
                todo["ns"].append(sighting)
        for source, rows in todo.items():
            if len(rows) == 10_000 or (i == n - 1 and rows):
                await store.ingest(batch(source, rows, at, first[source]))
                first[source] = False
                rows.clear()
    return time.perf_counter() - t0


class Holds:
    """Each dry-run request's hold of the store (the store reports it with the chunk) and when it was answered."""

    def __init__(self, store: Store) -> None:
        self.chunks: list[tuple[float, float]] = []  # (answered at, seconds held)
        self._ask = store._execute
        store._execute = self.ask  # type: ignore[method-assign]

    async def ask(self, request: Any) -> Any:
        got = await self._ask(request)
        if isinstance(got, PreviewPart):
            self.chunks.append((time.perf_counter(), got.seconds))
        return got

    def longest(self) -> float:
        return max(held for _, held in self.chunks)

    def waited(self, asked: float, done: float) -> float:
        """How long a request asked at ``asked`` and answered at ``done`` waited for dry-run requests at most.

        The store does one request at a time, so each chunk answered meanwhile
        ran before it (counted whole, though the one under way when it was
        asked had partly run already: an upper bound).
        """
        return sum(held for at, held in self.chunks if asked < at <= done)


async def ingest_feed(
    store: Store, source: str, values: Iterator[tuple[str, str]], n: int, size: int
) -> list[tuple[float, float]]:
    """Ingest ``n`` IoCs as ``source`` in batches of ``size``: when each batch was asked for and done."""
    at = now()
    times: list[tuple[float, float]] = []
    for part in iter(lambda: list(itertools.islice(values, min(size, n - size * len(times)))), []):
        req = batch(source, [Sighting(type=t, value=v, last_seen=at) for t, v in part], at, fresh=False)
        asked = time.perf_counter()
        await store.ingest(req)
        times.append((asked, time.perf_counter()))
    return times


async def probe(store: Store, values: Iterator[tuple[str, str]], count: int) -> list[tuple[float, float]]:
    """``count`` small batches (100 IoCs, a TAXII page) 50 ms apart: when each was asked for and done."""
    out: list[tuple[float, float]] = []
    for _ in range(count):
        out += await ingest_feed(store, "feed3", values, 100, 100)
        await trio.sleep(0.05)
    return out


async def dry_run_once(store: Store, cfg: Any, sharers: dict[str, Sharer], rule: str) -> tuple[float, dict]:
    rc = cfg.rules[rule]
    used = [(name, sh) for name, sh in sorted(sharers.items()) if sh.sh.rule == rule]
    t0 = time.perf_counter()
    out = await dry_run(store, Rule(rc.filter, rc.exceptions), used, at=now(), seen_since=None)
    return time.perf_counter() - t0, out


async def measure(workdir: str, n: int, repeats: int, ingest_n: int) -> dict:
    out_path = os.path.join(workdir, "out", "half.txt")
    cfg = parse_config(CONFIG.format(state=workdir, rule=RULE, out=out_path))
    res: dict = {"n": n, "dry_runs": {}}
    async with trio.open_nursery() as root, AsyncExitStack() as stack:
        store = await root.start(run_store, os.path.join(workdir, "ctd.db"))
        holds = Holds(store)
        res["fill_s"] = await fill(store, n)
        adapters = {
            name: await stack.enter_async_context(open_adapter(name, cfg.plugins[name]))
            for name in ("lists", "fw", "ns")
        }
        sharers = {
            name: Sharer(name, sh, cfg.rules[sh.rule], cfg.plugins[sh.destination], adapters[sh.destination], store)
            for name, sh in cfg.sharing.items()
        }
        for label, rule in DRY_RUNS.items():
            holds.chunks.clear()
            times = []
            for _ in range(repeats):
                took, out = await dry_run_once(store, cfg, sharers, rule)
                times.append(took)
            res["dry_runs"][label] = {
                "first_s": times[0],
                "median_s": statistics.median(times),
                "max_s": max(times),
                "runs": repeats,
                "longest_chunk_s": holds.longest(),
                "selected": out["total"],
                "sharing": {s["name"]: [s["total"], s["bytes"], len(s["warnings"])] for s in out["sharing"]},
            }
        res["half_matching"] = (await store.rule_test(Selection(rule=Rule(RULE), at=now()), sample=0))["total"]
        sharer = sharers["bench"]
        t0 = time.perf_counter()
        first = await sharer.share_once()
        res["pass_s"] = time.perf_counter() - t0
        res["shared"] = first.pushed
        t0 = time.perf_counter()
        second = await sharer.share_once()
        res["unchanged_pass_s"] = time.perf_counter() - t0
        res["second_unchanged"] = second.unchanged
        # A second feed: alone, then while an analyst's dry runs repeat; then small
        # batches (a TAXII page every 50 ms), alone and during dry runs.
        feed2 = generate(2 * ingest_n, seed=SEED + 1, mix=MIX)
        feed3 = generate(200 * 100, seed=SEED + 2, mix=MIX)
        t0 = time.perf_counter()
        await ingest_feed(store, "feed2", feed2, ingest_n, 20_000)
        alone_rate = ingest_n / (time.perf_counter() - t0)
        small_alone = [b - a for a, b in await probe(store, feed3, 100)]
        holds.chunks.clear()
        during: list[float] = []
        done = trio.Event()

        async def analyst() -> None:
            while not done.is_set():
                during.append((await dry_run_once(store, cfg, sharers, "three"))[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(analyst)
            t0 = time.perf_counter()
            big = await ingest_feed(store, "feed2", feed2, ingest_n, 20_000)
            during_rate = ingest_n / (time.perf_counter() - t0)
            small = await probe(store, feed3, 100)
            done.set()
        res["ingest"] = {
            "feed_alone_iocs_per_s": alone_rate,
            "feed_during_iocs_per_s": during_rate,
            "small_batch_alone_median_s": statistics.median(small_alone),
            "small_batch_alone_max_s": max(small_alone),
            "small_batch_during_median_s": statistics.median(b - a for a, b in small),
            "small_batch_during_max_s": max(b - a for a, b in small),
            "worst_wait_s": max(holds.waited(a, b) for a, b in big + small),
            "longest_chunk_s": holds.longest(),
            "dry_runs": len(during),
            "dry_run_median_s": statistics.median(during),
        }
        root.cancel_scope.cancel()
    res["list_lines"] = (await trio.Path(out_path).read_text()).count("\n")
    return res


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(r: dict, rss: float) -> None:
    print(f"store: {r['n']:,} active IoCs, 50% URLs (filled in {r['fill_s']:.1f}s)")
    print("rules test 'type = url' (dry run), first / median / max of the runs, longest hold of the store:")
    for label, d in r["dry_runs"].items():
        shares = "; ".join(f"{k} {v[0]:,}" for k, v in d["sharing"].items()) or "no sharing"
        print(
            f"  {label:36s} {d['first_s']:5.2f} / {d['median_s']:5.2f} / {d['max_s']:5.2f}s"
            f"  ({d['runs']} runs, chunk <= {d['longest_chunk_s'] * 1000:.0f} ms)"
            f"  target < {TARGET_S:.0f} s {verdict(d['max_s'] < TARGET_S)}   [{d['selected']:,} selected; {shares}]"
        )
    print(
        f"  full sharing pass to file   {r['pass_s']:8.2f}s  {r['shared'] / r['pass_s']:>10,.0f} IoCs/s"
        f"  ({RULE!r}: {r['shared']:,} shared of {r['half_matching']:,}, {r['list_lines']:,} lines written)"
    )
    print(f"  pass with nothing changed   {r['unchanged_pass_s']:8.2f}s  (list rewritten: {not r['second_unchanged']})")
    g = r["ingest"]
    print(
        f"  second feed (20k batches)   {g['feed_alone_iocs_per_s']:>8,.0f} IoCs/s alone,"
        f" {g['feed_during_iocs_per_s']:,.0f} IoCs/s while dry runs repeat"
        f" ({g['dry_runs']} dry runs of three destinations, median {g['dry_run_median_s']:.2f}s)"
    )
    ok = g["worst_wait_s"] <= STALL_TARGET_S
    print(
        f"  100-IoC batches             {g['small_batch_alone_median_s'] * 1000:5.1f} ms median"
        f" ({g['small_batch_alone_max_s'] * 1000:.0f} max) alone,"
        f" {g['small_batch_during_median_s'] * 1000:.1f} ms ({g['small_batch_during_max_s'] * 1000:.0f} max)"
        f" during dry runs"
    )
    print(
        f"  ingest waited for dry runs  {g['worst_wait_s'] * 1000:5.0f} ms at worst"
        f" (longest dry-run request {g['longest_chunk_s'] * 1000:.0f} ms)   target <= 100 ms {verdict(ok)}"
    )
    print(f"  peak RSS                    {rss:8.0f} MB")


def main() -> None:
    from ctd.cli import tune_runtime
    from ctd.service import logs as logs

    logs.configure_logging("warning")
    tune_runtime()  # as `ctd run` does
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="dry runs per configuration")
    ap.add_argument("--ingest", type=int, default=200_000, help="IoCs of the second feed, per phase")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write the figures as JSON (to FILE, or '-': stdout)"
    )
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="ctd-bench-sharing-")
    try:
        r = trio.run(measure, workdir, a.n, a.repeats, a.ingest)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(r, rss)
    if a.json:
        doc = json.dumps({"bench": "sharing", "machine": machine(), "figures": {**r, "peak_rss_mb": round(rss)}})
        if a.json == "-":
            print(doc)
        else:
            with open(a.json, "w") as f:
                f.write(doc + "\n")


if __name__ == "__main__":
    main()
