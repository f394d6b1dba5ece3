"""Adapter discovery through the ``ctd.adapters`` entry-point group.

Built-in adapters are declared in ctd's own pyproject under the same group a
third-party package would use, so both are found the same way.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from ctd.errors import ConfigError

GROUP = "ctd.adapters"


@cache
def available() -> dict[str, Any]:
    """Map adapter name to its entry point (not loaded yet)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


@cache
def load(name: str) -> Any:
    """Load the adapter class registered as ``name``."""
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(f"unknown adapter {name!r} (installed: {known})")
    try:
        return eps[name].load()
    except ImportError as exc:
        raise ConfigError(f"adapter {name!r} cannot be loaded: {exc}") from exc
