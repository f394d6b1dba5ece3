"""Adapters for tests, loaded as ``adapter = "tests.fake_adapters:NAME"``.

They implement the same contract as the real ones (``ctd.model.Adapter``).
What a fake does (a ``Script`` to pull, a ``Remote`` to push to) lives in a
``Fakes`` that each test makes for itself, keyed by the plugin's ``key``
option: no state is shared between tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import msgspec
import trio

from ctd.config import PluginConfig
from ctd.model import ActionSpec, Adapter, AuthError, Batch, PullContext, PushResult, Rejected, ShareItem, Sighting
from ctd.plugins import adapter_class, open_adapter


class Watched:
    """Something a test can wait on without polling: ``await x.wait_until(lambda: ...)``."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def changed(self) -> None:
        """Wake the waiters (the fake calls it after each change of its state)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, pred: Callable[[], object]) -> None:
        while not pred():
            await self._changed.wait()


class Script(Watched):
    def __init__(
        self,
        batches: list[list[str]] | None = None,
        errors: list[BaseException] | None = None,
        rejected: list[Rejected] | None = None,
    ) -> None:
        super().__init__()
        self.batches = batches or [["evil.example"]]
        self.errors = list(errors or [])
        self.rejected = list(rejected or [])  # yielded with the first batch
        self.calls: list[tuple[float, PullContext]] = []
        self.gate: trio.Event | None = None  # when set, the pull waits on it after its first batch
        self.in_pull = trio.Event()
        self.finished = 0
        self.cancelled = 0


class Remote(Watched):
    """What a destination holds, plus knobs for tests."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, ShareItem] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.reject: dict[str, str] = {}  # value -> reason the destination gives
        self.errors: list[BaseException] = []  # raised by the next calls, one each
        self.gate: trio.Event | None = None  # when set, a push waits on it (after setting in_push)
        self.in_push = trio.Event()

    def _maybe_fail(self) -> None:
        if self.errors:
            raise self.errors.pop(0)


class Fakes:
    """One test's fake adapters: the scripts and remotes behind them, by the plugin's ``key`` option.

    Build a fake with ``fakes.adapter(name, plugin)``, or hand ``fakes.open_adapter``
    to ``Daemon(..., open_adapter=...)`` (other adapters then open as usual).
    """

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.remotes: dict[str, Remote] = {}
        # Adapters opened through ``open_adapter``, by plugin name: each actor (re)start opens one.
        self.opened: Counter[str] = Counter()

    def script(self, key: str) -> Script:
        return self.scripts.setdefault(key, Script())

    def remote(self, key: str) -> Remote:
        return self.remotes.setdefault(key, Remote())

    def adapter(self, name: str, plugin: PluginConfig) -> Adapter:
        """Plugin ``name``'s adapter: a fake backed by this Fakes, or a real one (with no client handed in)."""
        cls = adapter_class(plugin.adapter)
        if issubclass(cls, FakeAdapter):
            return cls(name, plugin.options, fakes=self)
        return cls(name, plugin.options)

    @asynccontextmanager
    async def open_adapter(self, name: str, plugin: PluginConfig) -> AsyncIterator[Adapter]:
        self.opened[name] += 1
        if issubclass(adapter_class(plugin.adapter), FakeAdapter):
            yield self.adapter(name, plugin)
        else:
            async with open_adapter(name, plugin) as adapter:
                yield adapter


class KeyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    key: str  # names this fake's script or remote in the test's Fakes


class FakeAdapter(Adapter):
    """A test adapter whose behaviour lives in a ``Fakes`` (a fresh one unless given)."""

    Config: ClassVar[type[msgspec.Struct]] = KeyConfig

    def __init__(self, name: str, config: Any, client: Any = None, *, fakes: Fakes | None = None) -> None:
        super().__init__(name, config, client)
        self.fakes = fakes if fakes is not None else Fakes()


class ScriptedAdapter(FakeAdapter):
    can_pull: ClassVar[bool] = True

    def __init__(self, name: str, config: Any, client: Any = None, *, fakes: Fakes | None = None) -> None:
        super().__init__(name, config, client, fakes=fakes)
        self.script = self.fakes.script(config.key)

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        sc = self.script
        sc.calls.append((trio.current_time(), ctx))
        sc.changed()
        if sc.errors:
            raise sc.errors.pop(0)
        try:
            for i, values in enumerate(sc.batches):
                last = i == len(sc.batches) - 1
                yield Batch(
                    sightings=[Sighting(type="domain", value=v) for v in values],
                    rejected=sc.rejected if i == 0 else [],
                    sub_checkpoint=None if last else {"batch": i + 1},
                    snapshot_end=last,
                )
                if i == 0 and sc.gate is not None:
                    sc.in_pull.set()
                    await sc.gate.wait()
        except trio.Cancelled:
            sc.cancelled += 1
            sc.changed()
            raise
        sc.finished += 1
        sc.changed()

    async def check(self) -> str:
        return "ok"


class PushOnly(Adapter):
    """An adapter that cannot pull (for config validation tests)."""


# --- destinations -----------------------------------------------------------------


class MemoryParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    list: str = "default"
    max_entries: int | None = None
    max_bytes: int | None = None


class MemoryDestination(FakeAdapter):
    """An incremental destination (add/delete) that can also be pulled: it reports what it holds."""

    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add to a list", mode="incremental", params=MemoryParams, batch_size=3),
    }

    def __init__(self, name: str, config: Any, client: Any = None, *, fakes: Fakes | None = None) -> None:
        super().__init__(name, config, client, fakes=fakes)
        self.remote = self.fakes.remote(config.key)

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
        self.remote.changed()
        return PushResult(rejected=rejected)

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        await trio.lowlevel.checkpoint()
        self.remote.calls.append(("retract", [i.value for i in items]))
        self.remote._maybe_fail()
        for i in items:
            self.remote.items.pop(i.value, None)
        self.remote.changed()
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


class FullDestination(FakeAdapter):
    """A full-replace destination: every delivery is the whole list."""

    can_pull: ClassVar[bool] = False
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "replace": ActionSpec(
            description="replace a list", mode="full", params=FullParams, size="json", entry_overhead=3
        ),
    }

    def __init__(self, name: str, config: Any, client: Any = None, *, fakes: Fakes | None = None) -> None:
        super().__init__(name, config, client, fakes=fakes)
        self.remote = self.fakes.remote(config.key)

    @classmethod
    def limits(cls, action: str, params: FullParams) -> tuple[int | None, int | None]:
        return params.max_entries, None

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        await trio.lowlevel.checkpoint()
        self.remote.calls.append(("replace", [i.value for i in items]))
        self.remote._maybe_fail()
        self.remote.items = {i.value: i for i in items}
        self.remote.changed()
        return PushResult()


class SecretAdapter(Adapter):
    """A source that needs a token and whose peer rejects it (for secret-leak tests)."""

    can_pull: ClassVar[bool] = True

    class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
        url: str
        token: str

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        await trio.lowlevel.checkpoint()
        raise AuthError(f"{self.config.url}: 401 Unauthorized")
        yield  # pragma: no cover

    async def check(self) -> str:
        return f"reached {self.config.url}"
