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


# --- destinations -----------------------------------------------------------------

from ctd.adapters.base import ActionSpec, PushResult, ShareItem  # noqa: E402


class MemoryParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    list: str = "default"
    max_entries: int | None = None
    max_bytes: int | None = None


class Remote:
    """What a destination holds, plus knobs for tests."""

    def __init__(self) -> None:
        self.items: dict[str, ShareItem] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.reject: dict[str, str] = {}  # value -> reason the destination gives
        self.errors: list[BaseException] = []  # raised by the next calls, one each
        self.gate: trio.Event | None = None  # when set, a push waits on it (after setting in_push)
        self.in_push = trio.Event()

    def _maybe_fail(self) -> None:
        if self.errors:
            raise self.errors.pop(0)


REMOTES: dict[str, Remote] = {}


class MemoryDestination:
    """An incremental destination (add/delete) that can also be pulled: it reports what it holds."""

    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add to a list", mode="incremental", params=MemoryParams, batch_size=3),
    }

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        key: str

    def __init__(self, name: str, config: Any, client: Any) -> None:
        self.remote = REMOTES.setdefault(config.key, Remote())

    @classmethod
    def target(cls, action: str, params: MemoryParams) -> str:
        return params.list

    @classmethod
    def limits(cls, action: str, params: MemoryParams) -> tuple[int | None, int | None]:
        return params.max_entries, params.max_bytes

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        await trio.lowlevel.checkpoint()
        self.remote.calls.append(("push", [i.value for i in items]))
        if self.remote.gate is not None:
            self.remote.in_push.set()
            await self.remote.gate.wait()
        self.remote._maybe_fail()
        rejected = {i.value: self.remote.reject[i.value] for i in items if i.value in self.remote.reject}
        for i in items:
            if i.value not in rejected:
                self.remote.items[i.value] = i
        return PushResult(rejected=rejected)

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        await trio.lowlevel.checkpoint()
        self.remote.calls.append(("retract", [i.value for i in items]))
        self.remote._maybe_fail()
        for i in items:
            self.remote.items.pop(i.value, None)
        return PushResult()

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        await trio.lowlevel.checkpoint()
        yield Batch(
            sightings=[Sighting(type=i.type, value=i.value) for i in self.remote.items.values()],
            snapshot_end=True,
        )

    async def check(self) -> str:
        return "ok"


class FullParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    list: str = "default"
    max_entries: int | None = None


class FullDestination:
    """A full-replace destination: every delivery is the whole list."""

    can_pull: ClassVar[bool] = False
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "replace": ActionSpec(description="replace a list", mode="full", params=FullParams, size="json",
                              entry_overhead=3),
    }

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        key: str

    def __init__(self, name: str, config: Any, client: Any) -> None:
        self.remote = REMOTES.setdefault(config.key, Remote())

    @classmethod
    def limits(cls, action: str, params: FullParams) -> tuple[int | None, int | None]:
        return params.max_entries, None

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        await trio.lowlevel.checkpoint()
        self.remote.calls.append(("replace", [i.value for i in items]))
        self.remote._maybe_fail()
        self.remote.items = {i.value: i for i in items}
        return PushResult()


class SecretAdapter:
    """A source that needs a token and whose peer rejects it (for secret-leak tests)."""

    can_pull: ClassVar[bool] = True

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        url: str
        token: str

    def __init__(self, name: str, config: Any, client: Any) -> None:
        self.config = config

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        from ctd.errors import AuthError

        await trio.lowlevel.checkpoint()
        raise AuthError(f"{self.config.url}: 401 Unauthorized")
        yield  # pragma: no cover

    async def check(self) -> str:
        return f"reached {self.config.url}"
