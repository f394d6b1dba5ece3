"""Finding adapters, and the one way to run one: ``open_adapter``.

Adapters register under the ``ctd.adapters`` entry-point group; the built-in
ones are declared in ctd's own pyproject under the same group a third-party
package would use, so both are found the same way. ``package.module:Class``
names an adapter that is not installed as an entry point.

A class is checked once, when it is loaded: it must subclass
``ctd.model.Adapter`` and declare consistent capabilities. From then on the
core calls its hooks without probing for them.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

import trio

from ctd.errors import ConfigError
from ctd.model import Adapter

if TYPE_CHECKING:
    from ctd.config import PluginConfig

GROUP = "ctd.adapters"


@cache
def available() -> dict[str, EntryPoint]:
    """Map adapter name to its entry point (not loaded yet)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


@cache
def load(name: str) -> type[Adapter]:
    """Load and check the adapter class registered as ``name``."""
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(f"unknown adapter {name!r} (installed: {known})")
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise ConfigError(f"adapter {name!r} cannot be loaded: {exc}") from exc
    return checked(name, cls)


@cache
def adapter_class(name: str) -> type[Adapter]:
    """An adapter by entry-point name, or ``package.module:Class`` for out-of-tree adapters."""
    if ":" not in name:
        return load(name)
    mod, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load adapter {name!r}: {exc}") from exc
    return checked(name, cls)


def checked(name: str, cls: object) -> type[Adapter]:
    """``cls`` if it is an adapter whose declared capabilities hold together."""
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"adapter {name!r} is not a ctd.model.Adapter")
    if cls.can_push != bool(cls.ACTIONS):
        raise ConfigError(f"adapter {name!r}: can_push must be true exactly when it has ACTIONS")
    staged = [a for a, spec in cls.ACTIONS.items() if spec.needs_apply]
    if staged and cls.apply is Adapter.apply:
        raise ConfigError(f"adapter {name!r}: action {staged[0]!r} needs_apply but the adapter has no apply()")
    return cls


@asynccontextmanager
async def open_adapter(name: str, plugin: PluginConfig) -> AsyncIterator[Adapter]:
    """The adapter of plugin ``name`` with its own HTTP client, closed when the block ends.

    Closing is shielded: an actor cancelled on reload or shutdown still releases
    its connections.
    """
    cls = adapter_class(plugin.adapter)
    client = cls.make_client(plugin.options)
    try:
        adapter = cls(name, plugin.options, client)
        try:
            yield adapter
        finally:
            with trio.CancelScope(shield=True):
                await adapter.aclose()
    finally:
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()
