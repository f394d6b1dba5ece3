"""``ctd run --once``: one pull of every pulling plugin, a summary, an exit code."""

from __future__ import annotations

import sys

import trio

from ctd.config import Config
from ctd.daemon import allowlist_matcher, db_path, make_adapter
from ctd.source import AllowlistRef, PullResult, SourceStatus, describe, pull_once
from ctd.store import run_store


async def run_once(cfg: Config) -> int:
    results: dict[str, PullResult] = {}
    allow = AllowlistRef(allowlist_matcher(cfg))
    async with trio.open_nursery() as root:
        store = await root.start(run_store, db_path(cfg))

        async def one(name: str) -> None:
            plugin = cfg.plugins[name]
            status = SourceStatus(name, plugin)
            try:
                results[name] = await pull_once(name, plugin, make_adapter(name, plugin), store, allow, status)
            except Exception as exc:  # noqa: BLE001 - reported in the summary and the exit code
                results[name] = PullResult(source=name, error=describe(exc))

        async with trio.open_nursery() as pulls:
            for name, plugin in cfg.plugins.items():
                if plugin.pull:
                    pulls.start_soon(one, name)
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
                f"retracted={r.retracted} batches={r.batches} ({r.duration_s:.2f}s)"
            )
    sys.stdout.flush()
    return 1 if failed else 0
