"""Adapter lookup and lifecycle (ctd.plugins): classes are checked once at load, ``open_adapter`` owns the client."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import msgspec
import pytest
import trio

from ctd.config import parse_config
from ctd.errors import ConfigError
from ctd.model import ActionSpec, Adapter, PushResult, ShareItem
from ctd.plugins import adapter_class, open_adapter

CLOSED: list[str] = []  # what the Recorder's lifecycle closed, in order (reset by each test)


class Recorder(Adapter):
    """Makes a client and records what is closed, and when."""

    can_pull: ClassVar[bool] = True

    @classmethod
    def make_client(cls, options: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        real = client.aclose

        async def aclose() -> None:
            await trio.lowlevel.checkpoint()  # a cancelled, unshielded close would stop here
            CLOSED.append("client")
            await real()

        client.aclose = aclose  # type: ignore[method-assign]
        return client

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        CLOSED.append("adapter")


class Unbuildable(Recorder):
    def __init__(self, name: str, config: Any, client: Any = None) -> None:
        raise ValueError("cannot be built")


class NotAnAdapter:
    can_pull = True


class Params(msgspec.Struct, frozen=True):
    pass


class PushWithoutFlag(Adapter):
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add", mode="incremental", params=Params),
    }


class Minimal(Adapter):
    """A destination that declares only what it does: every other hook is the contract's default."""

    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "add": ActionSpec(description="add", mode="incremental", params=Params, max_entries=7),
    }

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        return PushResult()


def plugin(adapter: str) -> Any:
    return parse_config(f'[plugins.p]\nadapter = "{adapter}"\npull = false\n').plugins["p"]


async def test_open_adapter_hands_the_adapter_its_client_and_closes_both():
    """The adapter gets the client make_client built; on exit its aclose runs, then the client is closed."""
    CLOSED.clear()
    async with open_adapter("p", plugin("tests.test_plugins:Recorder")) as adapter:
        assert isinstance(adapter.client, httpx.AsyncClient) and adapter.name == "p"
        assert CLOSED == []
    assert CLOSED == ["adapter", "client"]
    assert adapter.client.is_closed


async def test_open_adapter_closes_even_when_cancelled():
    """An actor cancelled on reload or shutdown still closes its adapter and client (shielded)."""
    CLOSED.clear()
    with trio.CancelScope() as scope:
        async with open_adapter("p", plugin("tests.test_plugins:Recorder")):
            scope.cancel()
            await trio.sleep_forever()
    assert CLOSED == ["adapter", "client"]


async def test_open_adapter_closes_the_client_when_the_adapter_cannot_be_built():
    """A constructor that raises still gets its client closed."""
    CLOSED.clear()
    with pytest.raises(ValueError, match="cannot be built"):
        async with open_adapter("p", plugin("tests.test_plugins:Unbuildable")):
            pass
    assert CLOSED == ["client"]


def test_a_class_that_is_not_an_adapter_is_refused_at_load():
    """Loading checks the contract once: a class that is not a ctd.model.Adapter is a config error."""
    with pytest.raises(ConfigError, match="is not a ctd.model.Adapter"):
        adapter_class("tests.test_plugins:NotAnAdapter")


def test_actions_without_can_push_is_refused_at_load():
    """Declared capabilities must hold together: ACTIONS without can_push (or the reverse) is a config error."""
    with pytest.raises(ConfigError, match="can_push must be true exactly when it has ACTIONS"):
        adapter_class("tests.test_plugins:PushWithoutFlag")


def test_an_adapter_needs_only_the_hooks_it_has():
    """An adapter without target/limits/check hooks loads, validates and shares with the contract's defaults."""
    cfg = parse_config(
        '[plugins.src]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "k"\n'
        '[plugins.dest]\nadapter = "tests.test_plugins:Minimal"\npull = false\n'
        '[rules.r]\nfilter = "type = domain"\n'
        '[sharing.s1]\nsources = ["src"]\nrule = "r"\ndestination = "dest"\naction = "add"\n'
        '[sharing.s2]\nsources = ["src"]\nrule = "r"\ndestination = "dest"\naction = "add"\n'
    )
    cls = adapter_class("tests.test_plugins:Minimal")
    assert cls.target("add", cfg.sharing["s1"].params) is None  # per value: two sharings may share a destination
    assert cls.limits("add", cfg.sharing["s1"].params) == (None, None)  # the ActionSpec's own limits apply
    assert not cls.can_pull and not cls.can_serve


async def test_plugins_check_without_a_check_hook_says_so():
    """`ctdctl plugins check` on an adapter without a connectivity check reports that, ok."""
    from ctd.control.commands_admin import AdminCommands

    cfg = parse_config('[plugins.dest]\nadapter = "tests.test_plugins:Minimal"\npull = false\n')

    class View:
        config = cfg

    cmds = AdminCommands()
    cmds.d = View()  # type: ignore[assignment]
    assert await cmds.plugins_check({"name": "dest"}) == {
        "plugin": "dest",
        "ok": True,
        "message": "this adapter has no connectivity check",
        "checks": [],
    }
