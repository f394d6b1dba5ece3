"""Adapters for tests, loaded as ``adapter = "tests.fake_adapters:NAME"``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec
import trio

from ctd.model import Batch, PullContext, Sighting

# Scripts keyed by the plugin's `key` option: tests put behaviour here.
SCRIPTS: dict[str, "Script"] = {}


class Script:
    def __init__(self, batches: list[list[str]] | None = None, errors: list[BaseException] | None = None) -> None:
        self.batches = batches or [["evil.example"]]
        self.errors = list(errors or [])
        self.calls: list[tuple[float, PullContext]] = []
        self.gate: trio.Event | None = None  # when set, the pull waits on it after its first batch
        self.in_pull = trio.Event()
        self.finished = 0
        self.cancelled = 0


class ScriptedAdapter:
    can_pull: ClassVar[bool] = True

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        key: str

    def __init__(self, name: str, config: Any, client: Any) -> None:
        self.script = SCRIPTS.setdefault(config.key, Script())

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        sc = self.script
        sc.calls.append((trio.current_time(), ctx))
        if sc.errors:
            raise sc.errors.pop(0)
        try:
            for i, values in enumerate(sc.batches):
                last = i == len(sc.batches) - 1
                yield Batch(
                    sightings=[Sighting(type="domain", value=v) for v in values],
                    sub_checkpoint=None if last else {"batch": i + 1},
                    snapshot_end=last,
                )
                if i == 0 and sc.gate is not None:
                    sc.in_pull.set()
                    await sc.gate.wait()
        except trio.Cancelled:
            sc.cancelled += 1
            raise
        sc.finished += 1

    async def check(self) -> str:
        return "ok"


class PushOnly:
    """An adapter that cannot pull (for config validation tests)."""

    can_pull: ClassVar[bool] = False

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        pass

    def __init__(self, name: str, config: Any, client: Any) -> None:
        pass
