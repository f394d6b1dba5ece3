"""What every benchmark writes with ``--json PATH``: ``{"bench": NAME, "machine": {...}, "figures": {...}}``.

The machine block says where the figures were measured (CPU model, cores, RAM,
load average when the run started, Python and SQLite versions), so runs can be
compared and a slow run on a busy machine told apart from a regression.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import time
from typing import Any


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model or "?",
        "cores": os.cpu_count(),
        "ram_gb": round(ram, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # a shared machine: how busy it was at the start
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(path: str | None, bench: str, figures: dict[str, Any], mach: dict[str, Any] | None = None) -> None:
    """Write the figures to ``path`` (its directory is created); nothing if ``path`` is None."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"bench": bench, "machine": mach or machine(), "figures": figures}, f, indent=2, sort_keys=True)
        f.write("\n")
