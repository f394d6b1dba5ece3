#!/usr/bin/env python3
"""JSON feed memory benchmark: the real daemon pulls a JSON gzip bomb over loopback.

    python bench/json_feed.py                      # 256 MiB array of short strings
    python bench/json_feed.py --mib 64 --filler 198.51.100.7 --json build/bench/json_feed.json

The body is a JSON array of ``--mib`` MiB (``"198.51.100.1"``, then
``--filler`` repeated, then ``"198.51.100.2"``), gzip'd on the fly (about
1/1000 of that on the wire) and served with ``Content-Encoding: gzip`` by a
loopback HTTP server. The daemon (``ctd run``, a subprocess) pulls it as a
``feed`` plugin with ``format = "json"`` (and a 2 h pull ``timeout``: 67M
items take longer than the default 10 min); the script prints the daemon's peak
RSS (VmHWM) and the pull's wall time. The target (information only, exit 0
either way) is a peak under 300 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchjson

from tests.daemonproc import DaemonProc, short_tmpdir
from tests.feedbomb import json_bomb, serve_gzip, vm_hwm, watch

T_RSS = 300 * 10**6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="inflated body size in MiB (default 256)")
    ap.add_argument("--filler", default="x", help='the repeated short string (default "x": rejected values)')
    ap.add_argument("--limit-mb", type=int, default=4000, help="stop the daemon past this peak RSS")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args()
    size = args.mib << 20
    t0 = time.monotonic()
    body = json_bomb(size, "198.51.100.1", args.filler, "198.51.100.2")
    made = time.monotonic() - t0
    d = DaemonProc(short_tmpdir(), "")
    try:
        with serve_gzip({"bomb.json": body}) as base:
            d.write_config(f"""
[plugins.bomb]
adapter = "feed"
url = "{base}/bomb.json"
format = "json"
max_bytes = {size + (1 << 20)}
sync_interval = "1h"
timeout = "2h"
""")
            d.start().wait_ready()
            assert d.proc is not None
            start = time.monotonic()
            idle = vm_hwm(d.proc.pid)

            def finished() -> dict | None:
                return next(
                    (e for e in d.logs() if e.get("ctd_event") in ("source_pull_completed", "source_pull_failed")), None
                )

            event, peak = watch(d.proc.pid, finished, args.limit_mb * 10**6, timeout=3600)
            took = time.monotonic() - start
            ok = event is not None and event["ctd_event"] == "source_pull_completed"
            last = ok and d.ctl_rc("indicators", "show", "198.51.100.2") == 0
        d.stop()
    finally:
        d.cleanup()
    result = {
        "inflated_mib": args.mib,
        "gzip_kib": len(body) >> 10,
        "filler": args.filler,
        "items": (size - 32) // (len(args.filler) + 3) + 2,
        "make_s": round(made, 1),
        "pull_s": round(took, 1),
        "idle_rss_mb": round(idle / 1e6),
        "peak_rss_mb": round(peak / 1e6),
        "pull": event.get("ctd_event") if event else f"stopped past {args.limit_mb} MB",
        "counts": {k: event.get(k) for k in ("new", "updated", "invalid", "batches")} if event else None,
        "last_value_stored": bool(last),
        "target_met": ok and peak < T_RSS,
    }
    benchjson.write(args.json, "json_feed", {**result, "mib": args.mib, "filler": args.filler})
    print(
        f"body: {args.mib} MiB JSON array of ~{result['items']:,} short strings ({args.filler!r}), "
        f"{result['gzip_kib']} KiB gzip (made in {made:.1f} s)"
    )
    print(
        f"pull: {result['pull']} in {took:.1f} s, counts {result['counts']}, "
        f"last value stored: {result['last_value_stored']}"
    )
    print(
        f"daemon RSS: {result['idle_rss_mb']} MB idle, peak {result['peak_rss_mb']} MB "
        f"(target < {T_RSS // 10**6} MB: {'met' if result['target_met'] else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
