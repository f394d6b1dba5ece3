"""Two tools sharing with each other through ctd, one round at a time (loop tests)."""

from __future__ import annotations

from typing import Any

from ctd.config import Config
from ctd.sharing.actor import Sharer
from ctd.sources.actor import AllowlistRef, SourceStatus, pull_once


class Exchange:
    """Every sharing configuration of ``cfg`` with the given adapter instances, on one store."""

    def __init__(self, cfg: Config, adapters: dict[str, Any], store: Any) -> None:
        self.cfg = cfg
        self.adapters = adapters
        self.store = store
        self.sharers = [
            Sharer(n, sh, cfg.rules[sh.rule], cfg.plugins[sh.destination], adapters[sh.destination], store)
            for n, sh in cfg.sharing.items()
        ]

    async def round(self) -> None:
        """Pull every pulling plugin once, then run one pass of every sharing configuration."""
        for name, plugin in self.cfg.plugins.items():
            if plugin.pull:
                await pull_once(
                    name, plugin, self.adapters[name], self.store, AllowlistRef(), SourceStatus(name, plugin)
                )
        for sharer in self.sharers:
            await sharer.share_once()
