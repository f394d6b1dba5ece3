"""``ctd run --once``: one pull of every pulling plugin, one pass of every sharing, a summary, an exit code."""

from __future__ import annotations

import sys

from ctd.config import Config
from ctd.daemon.daemon import Daemon
from ctd.service.sdnotify import Notifier


async def run_once(cfg: Config) -> int:
    """Pull and share once as the daemon would (``Daemon.run_once``); print a summary; 1 if anything failed."""
    daemon = Daemon(cfg, Notifier(None))
    results, shared = await daemon.run_once()
    failed = 0
    for name in sorted(results):
        r = results[name]
        if r.error:
            failed += 1
            print(f"{name}: FAILED {r.error}")
        else:
            print(
                f"{name}: ok new={r.new} updated={r.updated} invalid={r.invalid} unsupported={r.unsupported} "
                f"field_warnings={r.field_warnings} allowlisted={r.allowlisted} retracted={r.retracted} "
                f"warninglisted={r.warninglisted} batches={r.batches} ({r.duration_s:.2f}s)"
            )
    for name in sorted(shared):
        s = shared[name]
        if s.error:
            failed += 1
            print(f"sharing {name}: FAILED {s.error}")
        elif s.muted:
            print(f"sharing {name}: muted")
        else:
            print(
                f"sharing {name}: ok candidates={s.candidates} pushed={s.pushed} rejected={s.rejected} "
                f"retracted={s.retracted} unshared={s.unshared}{' (unchanged)' if s.unchanged else ''}"
            )
    sys.stdout.flush()
    return 1 if failed else 0
