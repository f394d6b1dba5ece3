"""Benchmark of ctd.warninglists: load time, memory of the loaded lists, 1M checks.

    python bench/warninglists.py [--n 1000000] [--sets default,all] [--json PATH]

Each set is measured in a fresh interpreter so that one set's memory does not
hide in the next's.  Memory is the resident set size (VmRSS) after loading
minus before (what the daemon keeps), and the peak (VmHWM) during loading
minus the resident size before (what loading needs transiently).  The IoC mix
is fixed (seeded): 30% IPv4, 10% IPv6, 25% domains, 15% URLs, 15% hashes
(md5/sha1/sha256), 5% e-mail addresses, with about 1% of known benign values.
Targets (issue 16): 1M checks < 2 s, loaded lists < 150 MB.  The CPU time is
printed beside the wall time because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchjson


def _status(key: str) -> float:
    """A /proc/self/status memory field in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def mixed_iocs(n: int, seed: int = 16) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    tlds = ["com", "net", "org", "ru", "xyz", "top", "de", "io"]
    benign = [
        ("ipv4", "8.8.8.8"),
        ("ipv4", "10.1.2.3"),
        ("domain", "www.microsoft.com"),
        ("url", "https://github.com/x/y"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
    ]

    def name() -> str:
        return "".join(rnd.choice("abcdefghijklmnop") for _ in range(rnd.randint(5, 12))) + "." + rnd.choice(tlds)

    out: list[tuple[str, str]] = []
    for i in range(n):
        r = rnd.random()
        if r < 0.01:
            out.append(rnd.choice(benign))
        elif r < 0.30:
            out.append(("ipv4", ".".join(str(rnd.randint(1, 254)) for _ in range(4))))
        elif r < 0.40:
            out.append(
                (
                    "ipv6",
                    "2a0{:x}:{:x}:{:x}::{:x}".format(
                        *(rnd.randint(1, 0xFFFF) & m for m in (0xF, 0xFFFF, 0xFFFF, 0xFFFF))
                    ),
                )
            )
        elif r < 0.65:
            out.append(("domain", rnd.choice(["www.", "mail.", "", "cdn."]) + name()))
        elif r < 0.80:
            out.append(("url", f"https://{name()}/path/{i}"))
        elif r < 0.95:
            kind = rnd.choice(["md5", "sha1", "sha256"])
            length = {"md5": 32, "sha1": 40, "sha256": 64}[kind]
            out.append((kind, "".join(rnd.choice("0123456789abcdef") for _ in range(length))))
        else:
            out.append(("email", f"user{i}@{name()}"))
    return out


def measure(names: str, n: int) -> dict:
    """Run in a fresh interpreter: load one set, then check n IoCs."""
    from ctd.warninglists import WarningLists

    iocs = mixed_iocs(n)
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    lists = WarningLists.load(names)
    load_s = time.perf_counter() - t0
    rss1 = _status("VmRSS")
    match = lists.match
    t0, c0 = time.perf_counter(), time.process_time()
    hits = sum(1 for t, v in iocs if match(t, v) is not None)
    check_s, check_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {
        "set": names,
        "lists": len(lists.names),
        "entries": sum(i.entries for i in lists.info()),
        "load_s": round(load_s, 2),
        "rss_mib": round(rss1 - rss0, 1),
        "peak_mib": round(_status("VmHWM") - rss0, 1),
        "n": n,
        "check_s": round(check_s, 2),
        "check_cpu_s": round(check_cpu_s, 2),
        "us_per_check": round(check_s / n * 1e6, 2),
        "hits": hits,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sets", default="default,all")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one set in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n)))
        return
    results = []
    for names in args.sets.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", names, "--n", str(args.n)], check=True, capture_output=True, text=True
        ).stdout
        results.append(json.loads(out))
    benchjson.write(args.json, "warninglists", {"sets": results})
    for r in results:
        print(
            f"warninglists[{r['set']}]: {r['lists']} lists, {r['entries']:,} entries; "
            f"load {r['load_s']:.2f} s, RSS +{r['rss_mib']:.0f} MiB (peak +{r['peak_mib']:.0f} MiB); "
            f"{r['n']:,} mixed IoCs checked in {r['check_s']:.2f} s wall, {r['check_cpu_s']:.2f} s CPU "
            f"({r['us_per_check']:.2f} us each, {r['hits']:,} hits)"
        )


if __name__ == "__main__":
    main()
