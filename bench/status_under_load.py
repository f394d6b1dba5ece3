#!/usr/bin/env python3
"""`ctdctl status` under load: does polling it slow a large re-ingest, and what does one call cost?

    python bench/status_under_load.py                    # 300k IoCs, 200 concurrent status clients
    python bench/status_under_load.py --n 300000 --clients 200 --interval 0 --repo /path/to/another/checkout

The real daemon runs as a subprocess (``python -m ctd run``) on a ``file``
source of N synthetic IoCs (bench/ingest.py's generator). After the first pull,
the same file is pulled again with ``ctdctl sync`` (a re-ingest: every value
known), twice: alone, then while CLIENTS threads each send ``status`` every
INTERVAL seconds (0: back to back) over the control socket (a client refused with ``busy`` — the socket's caps
allow 16 connections per uid — retries after 20 ms). Printed: both re-ingest
times, how many status calls were answered meanwhile, their latency
(median, p99, max), the time a burst of CLIENTS concurrent calls takes on an
idle daemon, and one status call's latency. ``--repo`` runs the daemon from
another checkout (e.g. the commit before a change) with this checkout's client.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import benchjson  # noqa: E402
from ingest import generate  # noqa: E402

from ctd.ctdctl.client import ConnectError, ControlClient, DaemonError  # noqa: E402

BUSY_RETRY = 0.02


def start_daemon(repo: Path, work: Path, feed: Path) -> subprocess.Popen[bytes]:
    (work / "ctd.toml").write_text(
        f'[daemon]\nstate_dir = "{work}/var"\nsocket = "{work}/ctd.sock"\nlog_level = "warning"\n'
        f'[plugins.bench]\nadapter = "file"\npath = "{feed}"\nformat = "text"\nbatch_size = 20000\n'
        'sync_interval = "24h"\naging_days = 90\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CTD_SOCKET", "CTD_CONFIG"):
        env.pop(key, None)
    log = open(work / "daemon.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "ctd", "run", "--config", str(work / "ctd.toml")],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=log,
    )


def call(sock: str, cmd: str, timeout: float | None = 600.0, **args: object) -> object:
    """One request; refused for the socket's caps (``busy``, a full listen backlog): again after 20 ms."""
    while True:
        try:
            return ControlClient(sock, timeout=timeout).call(cmd, **args)
        except DaemonError as exc:
            if exc.code != "busy" and "still starting" not in exc.message:
                raise
        except ConnectError as exc:
            if "temporarily unavailable" not in str(exc):
                raise
        time.sleep(BUSY_RETRY)


def wait_first_pull(sock: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited ({proc.returncode})")
        try:
            st = call(sock, "status", timeout=30)
        except Exception:  # not listening yet
            time.sleep(0.2)
            continue
        src = [s for s in st["sources"] if s["name"] == "bench"]  # type: ignore[index]
        if src and src[0]["last_success"]:
            return
        time.sleep(0.5)
    sys.exit("the first pull did not complete")


def pollers(sock: str, clients: int, interval: float, stop: threading.Event) -> tuple[list[float], int]:
    """CLIENTS threads sending status every ``interval`` s (0: back to back) until ``stop``: the latencies."""
    latencies: list[float] = []
    lock = threading.Lock()

    def loop() -> None:
        mine = []
        while not stop.is_set():
            t0 = time.perf_counter()
            call(sock, "status")
            mine.append(time.perf_counter() - t0)
            if interval:
                stop.wait(interval)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join()
    return latencies, len(threads)


def burst(sock: str, clients: int) -> float:
    """Wall time for CLIENTS concurrent status calls, all answered."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: call(sock, "status"), range(clients)))
    return time.perf_counter() - t0


def reingest(sock: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = call(sock, "sync", timeout=None, source="bench")
    return time.perf_counter() - t0, result  # type: ignore[return-value]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between one client's calls (0: back to back)")
    ap.add_argument("--repo", type=Path, default=HERE.parent, help="run the daemon from this checkout")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctdb", dir="/tmp"))
    feed = work / "iocs.txt"
    with open(feed, "w", buffering=1 << 20) as f:
        f.writelines(f"{v}\n" for _, v in generate(a.n))
    proc = start_daemon(a.repo.resolve(), work, feed)
    sock = str(work / "ctd.sock")
    out: dict = {"n": a.n, "clients": a.clients, "interval": a.interval, "repo": str(a.repo)}
    try:
        t0 = time.perf_counter()
        wait_first_pull(sock, proc)
        out["first_pull_s"] = time.perf_counter() - t0
        one = []
        for _ in range(20):
            t = time.perf_counter()
            call(sock, "status")
            one.append(time.perf_counter() - t)
        out["status_idle_median_ms"] = statistics.median(one) * 1000
        out["burst_idle_s"] = burst(sock, a.clients)
        out["reingest_alone_s"], res = reingest(sock)
        out["reingest_alone_updated"] = res.get("updated")
        stop = threading.Event()
        box: dict = {}
        runner = threading.Thread(target=lambda: box.update(r=pollers(sock, a.clients, a.interval, stop)))
        runner.start()
        time.sleep(1.0)  # every poller is running
        out["reingest_loaded_s"], res = reingest(sock)
        stop.set()
        runner.join()
        latencies, _ = box["r"]
        out["reingest_loaded_updated"] = res.get("updated")
        out["status_calls_during_reingest"] = len(latencies)
        out["status_median_ms"] = statistics.median(latencies) * 1000 if latencies else None
        out["status_p99_ms"] = pct(latencies, 0.99) * 1000
        out["status_max_ms"] = max(latencies) * 1000 if latencies else None
        out["slowdown"] = out["reingest_loaded_s"] / out["reingest_alone_s"]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    benchjson.write(a.json, "status_under_load", out)
    every = f"every {a.interval:g} s" if a.interval else "back to back"
    print(f"daemon from {out['repo']}; N = {a.n:,} IoCs; {a.clients} concurrent status clients, each {every}")
    print(f"  first pull                         {out['first_pull_s']:8.2f} s")
    print(f"  status, idle (median of 20)        {out['status_idle_median_ms']:8.1f} ms")
    print(f"  {a.clients} concurrent status, idle       {out['burst_idle_s']:8.2f} s")
    print(f"  re-ingest alone                    {out['reingest_alone_s']:8.2f} s")
    print(f"  re-ingest under {a.clients} pollers        {out['reingest_loaded_s']:8.2f} s  (x{out['slowdown']:.2f})")
    print(
        f"  status calls answered meanwhile    {out['status_calls_during_reingest']:8d}"
        f"  (median {out['status_median_ms']:.1f} ms, p99 {out['status_p99_ms']:.1f} ms, "
        f"max {out['status_max_ms']:.1f} ms)"
    )


if __name__ == "__main__":
    main()
