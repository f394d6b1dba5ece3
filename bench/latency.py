#!/usr/bin/env python3
"""Latency benchmark: from a source's commit to the IoC at its destinations, under load.

    python bench/latency.py                      # 1M IoCs in the store, 60 s of trickle
    python bench/latency.py --n 1000000 --seconds 60 --json out.json

The real daemon runs as a subprocess (``python -m ctd run``) with:

* ``bulk``: a file source of N IoCs (bench/ingest.py's generator), pulled first:
  the store holds N IoCs before the measurement starts;
* ``bulk2``: another N-line feed, pulled while the trickle runs (``--no-parallel``:
  not), so the store actor is busy with a large ingest the whole time;
* ``trickle``: a file source re-read every second, to which this script appends
  ``--rate`` new domains per second for ``--seconds`` seconds;
* three sharings of the trickle source (rule ``type = domain``): a ``file`` list,
  an ``edl`` list served over HTTP, and the CrowdStrike emulator
  (``python -m tests.emulators.crowdstrike``, an incremental destination).

For each trickled IoC: its commit time is when a read-only connection to the
database (polled every 10 ms) first sees it; its arrival time at each
destination is when the poller of that destination first sees it (the list
file: every 20 ms; the EDL server: an HTTP GET every 50 ms; the emulator: its
IOC query every 100 ms). The latency is arrival - commit; the polling intervals
bound the error. Target (issue 14): p99 <= 2 s at every destination while the
parallel ingest runs. Information only: exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import generate  # noqa: E402

from ctd.ctdctl.client import ControlClient, DaemonError  # noqa: E402

T_P99 = 2.0
DOMAIN = "trickle.example"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def write_feeds(work: Path, n: int, parallel: bool) -> Path:
    """bulk.txt (N lines) now; the parallel feed's N lines in bulk2.next, moved into place later."""
    bulk, nxt = open(work / "bulk.txt", "w"), open(work / "bulk2.next", "w")
    for i, (_, value) in enumerate(generate(2 * n if parallel else n)):
        (bulk if i < n else nxt).write(value + "\n")
    bulk.close()
    nxt.close()
    (work / "bulk2.txt").write_text("")
    (work / "trickle.txt").write_text("")
    return work / "bulk2.next"


def start_emulator() -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.crowdstrike", "--port", "0", "--seed", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        sys.exit("the CrowdStrike emulator did not start")
    return proc, json.loads(line)


def config(work: Path, emu: dict, edl_port: int) -> str:
    creds = emu["credentials"]
    return f"""
[daemon]
state_dir = "{work}/var"
socket = "{work}/ctd.sock"
log_level = "warning"
[plugins.bulk]
adapter = "file"
path = "{work}/bulk.txt"
batch_size = 20000
sync_interval = "24h"
[plugins.bulk2]
adapter = "file"
path = "{work}/bulk2.txt"
batch_size = 20000
sync_interval = "24h"
[plugins.trickle]
adapter = "file"
path = "{work}/trickle.txt"
sync_interval = "1s"
[plugins.lists]
adapter = "file"
pull = false
[plugins.edl]
adapter = "edl"
pull = false
bind = "127.0.0.1:{edl_port}"
[plugins.cs]
adapter = "crowdstrike"
pull = false
base_url = "{emu["base_url"]}"
client_id = "{creds["client_id"]}"
client_secret = "{creds["client_secret"]}"
[rules.domains]
filter = "type = domain"
[sharing.to-file]
sources = ["trickle"]
rule = "domains"
destination = "lists"
action = "write"
params = {{ path = "{work}/out/trickle.txt" }}
[sharing.to-edl]
sources = ["trickle"]
rule = "domains"
destination = "edl"
action = "list"
params = {{ name = "trickle" }}
[sharing.to-cs]
sources = ["trickle"]
rule = "domains"
destination = "cs"
action = "ioc"
"""


def call(sock: str, cmd: str, timeout: float = 600.0, **args: object) -> object:
    while True:
        try:
            return ControlClient(sock, timeout=timeout).call(cmd, **args)
        except DaemonError as exc:
            if exc.code != "busy" and "still starting" not in exc.message:
                raise
        except OSError:
            pass
        time.sleep(0.05)


def sync_quietly(sock: str, source: str) -> None:
    """``ctdctl sync SOURCE``; the daemon stopping before it answered (the end of the run) is no error."""
    try:
        call(sock, "sync", timeout=3600, source=source)
    except DaemonError:
        pass


def wait_pulled(sock: str, proc: subprocess.Popen[bytes], source: str) -> None:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited ({proc.returncode})")
        try:
            st = call(sock, "status", timeout=30)
        except Exception:
            time.sleep(0.3)
            continue
        src = [s for s in st["sources"] if s["name"] == source]  # type: ignore[index]
        if src and src[0]["last_success"]:
            return
        time.sleep(0.5)
    sys.exit(f"{source}: the first pull did not complete")


class Seen:
    """When each trickled value was first seen somewhere (monotonic seconds)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def saw(self, values: list[str]) -> None:
        t = time.monotonic()
        with self.lock:
            for v in values:
                if v.endswith(DOMAIN) and v not in self.at:
                    self.at[v] = t


def poll(stop: threading.Event, every: float, look: object, seen: Seen) -> None:
    while not stop.is_set():
        try:
            seen.saw(look())  # type: ignore[operator]
        except Exception:  # not there yet (no file, no database, the server starting)
            pass
        stop.wait(every)


def db_looker(db: Path):
    state = {"after": 0, "conn": None}

    def look() -> list[str]:
        if state["conn"] is None:
            state["conn"] = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = (
            state["conn"]
            .execute("SELECT id, value FROM indicator WHERE id > ? AND type = 'domain' ORDER BY id", (state["after"],))
            .fetchall()
        )
        if rows:
            state["after"] = rows[-1][0]
        return [v for _, v in rows]

    return look


def file_looker(path: Path):
    state = {"sig": None}

    def look() -> list[str]:
        st = path.stat()
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig == state["sig"]:
            return []
        state["sig"] = sig
        return path.read_text().split()

    return look


def edl_looker(url: str):
    client = httpx.Client(timeout=5)
    return lambda: client.get(url).text.split()


def cs_looker(emu: dict):
    client = httpx.Client(base_url=emu["base_url"], timeout=10)
    creds = emu["credentials"]
    state: dict = {"token": None}

    def look() -> list[str]:
        if state["token"] is None:
            r = client.post(
                "/oauth2/token", data={"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
            )
            state["token"] = r.json()["access_token"]
        auth = {"Authorization": f"Bearer {state['token']}"}
        values, after = [], None
        while True:
            params = {"limit": 2000, **({"after": after} if after else {})}
            r = client.get("/iocs/combined/indicator/v1", params=params, headers=auth)
            if r.status_code == 401:
                state["token"] = None
                return values
            body = r.json()
            values += [x["value"] for x in body.get("resources") or []]
            after = (body.get("meta", {}).get("pagination") or {}).get("after")
            if not after or not body.get("resources"):
                return values

    return look


def stats(lat: list[float]) -> dict:
    if not lat:
        return {"n": 0}
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    return {"n": len(lat), "p50": q[49], "p95": q[94], "p99": q[98], "max": max(lat)}


def run(a: argparse.Namespace, work: Path) -> dict:
    print(f"writing feeds ({a.n:,} lines{' x2' if a.parallel else ''}) ...", flush=True)
    nxt = write_feeds(work, a.n, a.parallel)
    emu_proc, emu = start_emulator()
    edl_port = a.edl_port
    (work / "ctd.toml").write_text(config(work, emu, edl_port))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CTD_SOCKET", "CTD_CONFIG"):
        env.pop(key, None)
    log = open(work / "daemon.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctd", "run", "--config", str(work / "ctd.toml")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    sock = str(work / "ctd.sock")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        t0 = time.monotonic()
        wait_pulled(sock, proc, "bulk")
        print(f"store filled: {a.n:,} IoCs in {time.monotonic() - t0:.0f}s", flush=True)
        seen = {k: Seen() for k in ("commit", "file", "edl", "crowdstrike")}
        lookers = {
            "commit": (0.01, db_looker(work / "var" / "ctd.db")),
            "file": (0.02, file_looker(work / "out" / "trickle.txt")),
            "edl": (0.05, edl_looker(f"http://127.0.0.1:{edl_port}/edl/trickle.txt")),
            "crowdstrike": (0.1, cs_looker(emu)),
        }
        for k, (every, look) in lookers.items():
            th = threading.Thread(target=poll, args=(stop, every, look, seen[k]), daemon=True)
            th.start()
            threads.append(th)
        bulk2: threading.Thread | None = None
        if a.parallel:
            os.replace(nxt, work / "bulk2.txt")
            bulk2 = threading.Thread(target=sync_quietly, args=(sock, "bulk2"), daemon=True)
            bulk2.start()
        print(
            f"trickling {a.rate}/s for {a.seconds}s{' during a parallel ingest' if a.parallel else ''} ...", flush=True
        )
        sent: list[str] = []
        start = time.monotonic()
        with open(work / "trickle.txt", "a") as f:
            i = 0
            while time.monotonic() - start < a.seconds:
                due = start + i / a.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                value = f"t{i}.{DOMAIN}"
                f.write(value + "\n")
                f.flush()
                sent.append(value)
                i += 1
        parallel_running = bulk2 is not None and bulk2.is_alive()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(len(seen[k].at) < len(sent) for k in seen):
            time.sleep(0.2)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        emu_proc.terminate()
        emu_proc.wait(10)
    figures: dict = {"store_iocs": a.n, "rate": a.rate, "seconds": a.seconds, "trickled": len(sent)}
    figures["parallel_ingest_covered_trickle"] = parallel_running
    commit = seen["commit"].at
    for k in ("file", "edl", "crowdstrike"):
        lat = [seen[k].at[v] - commit[v] for v in sent if v in commit and v in seen[k].at]
        figures[k] = {**stats(lat), "missing": len(sent) - len(lat), "poll_s": lookers[k][0]}
    figures["committed"] = sum(1 for v in sent if v in commit)
    return figures


def report(f: dict) -> None:
    print(
        f"{f['trickled']:,} IoCs trickled at {f['rate']}/s into a store of {f['store_iocs']:,};",
        f"committed {f['committed']:,}",
    )
    if not f["parallel_ingest_covered_trickle"]:
        print("  (the parallel ingest ended before the trickle did)")
    print(f"  {'destination':<14}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  missing  target p99 <= {T_P99:.0f} s")
    for k in ("file", "edl", "crowdstrike"):
        s = f[k]
        if not s["n"]:
            print(f"  {k:<14}    none arrived")
            continue
        ok = "PASS" if s["p99"] <= T_P99 and not s["missing"] else "MISS"
        print(
            f"  {k:<14}{s['p50']:8.2f}{s['p95']:8.2f}{s['p99']:8.2f}{s['max']:8.2f}  {s['missing']:7d}  {ok}"
            f"  (polled every {s['poll_s'] * 1000:.0f} ms)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="IoCs in the store (and in the parallel feed)")
    ap.add_argument("--rate", type=int, default=100, help="new IoCs per second into the trickle source")
    ap.add_argument("--seconds", type=int, default=60, help="how long to trickle")
    ap.add_argument("--no-parallel", dest="parallel", action="store_false", help="no parallel ingest")
    ap.add_argument("--edl-port", type=int, default=18431)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctd-bench-latency-"))
    try:
        figures = run(a, work)
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(figures)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "latency", "machine": machine(), "figures": figures}, f, indent=2)


if __name__ == "__main__":
    main()
