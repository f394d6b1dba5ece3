"""``ctd run --once``: one pull of every pulling plugin, a summary, an exit code."""

from __future__ import annotations

import sys

import trio

from ctd.config import Config
from ctd.daemon.daemon import allowlist_matcher, db_path
from ctd.errors import describe
from ctd.plugins import open_adapter
from ctd.sharing.actor import Sharer, ShareResult
from ctd.sources.actor import AllowlistRef, PullResult, SourceStatus, pull_once
from ctd.store import run_store


async def run_once(cfg: Config) -> int:
    results: dict[str, PullResult] = {}
    shared: dict[str, ShareResult] = {}
    allow = AllowlistRef(allowlist_matcher(cfg))
    async with trio.open_nursery() as root:
        store = await root.start(run_store, db_path(cfg))

        async def one(name: str) -> None:
            plugin = cfg.plugins[name]
            status = SourceStatus(name, plugin)
            try:
                async with open_adapter(name, plugin) as adapter:
                    results[name] = await pull_once(name, plugin, adapter, store, allow, status)
            except Exception as exc:
                results[name] = PullResult(source=name, error=describe(exc))

        async with trio.open_nursery() as pulls:
            for name, plugin in cfg.plugins.items():
                if plugin.pull:
                    pulls.start_soon(one, name)
        for name, sh in cfg.sharing.items():
            dest = cfg.plugins[sh.destination]
            try:
                async with open_adapter(sh.destination, dest) as adapter:
                    sharer = Sharer(name, sh, cfg.rules[sh.rule], dest, adapter, store)
                    shared[name] = await sharer.share_once()
            except Exception as exc:
                shared[name] = ShareResult(sharing=name, error=describe(exc))
        root.cancel_scope.cancel()
    failed = 0
    for name in sorted(results):
        r = results[name]
        if r.error:
            failed += 1
            print(f"{name}: FAILED {r.error}")
        else:
            print(
                f"{name}: ok new={r.new} updated={r.updated} invalid={r.invalid} "
                f"retracted={r.retracted} warninglisted={r.warninglisted} batches={r.batches} ({r.duration_s:.2f}s)"
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
