"""The false-positive guard: a plugin's values checked against MISP warning lists.

Per plugin (common keys, ``[plugins.NAME]``):

- ``warninglists = "default" | "all" | ["name", ...] | "off"``: which lists of
  ``pymispwarninglists`` apply (``ctd.warninglists``). Unset, the adapter's
  ``default_warninglists`` applies: ``"default"`` for the ``rss`` and
  ``webpage`` adapters (values taken from prose), ``"off"`` for the others
  (vendor and curated sources, whose values are meant as indicators);
- ``warninglist_action = "inactive" | "tag"``: a hit is stored as reported and
  flagged with the list's name; ``inactive`` (default) keeps that report from
  making the indicator active (like the allowlist, but per source: another
  source without a guard can still make it active), ``tag`` leaves it active
  with the tag ``warninglist:NAME``.

Config validation checks the names and that the optional extra is installed
(``ctd.warninglists.lists_dir``), so a missing extra fails ``ctd check-config``
and a reload, never a running pull. The lists are loaded once per process and
selection, off the trio thread, and shared by every plugin with the same
selection while one of them holds them (``load_guard``).
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

import trio

from ctd.errors import ConfigError
from ctd.warninglists import WarningLists, lists_dir

if TYPE_CHECKING:
    from ctd.config import PluginConfig

OFF = "off"
ACTIONS = ("inactive", "tag")
Selection = str | list[str]  # "default" | "all" | "off" | [names], as written in the config

_lock = threading.Lock()  # one load per selection, even when several actors start at once
_live: weakref.WeakValueDictionary[tuple[str, ...] | str, WarningLists] = weakref.WeakValueDictionary()


def resolve(value: Selection | None, adapter_default: str, where: str) -> Selection:
    """The plugin's effective selection, checked: names exist and the extra is installed (ConfigError if not)."""
    sel = adapter_default if value is None else value
    if sel == OFF:
        return OFF
    if isinstance(sel, list):
        if not sel:
            raise ConfigError('an empty list of warning lists: write warninglists = "off"', f"{where}.warninglists")
        names = list(dict.fromkeys(sel))
    else:
        names = []
    try:
        root = lists_dir()
    except ConfigError as exc:
        raise ConfigError(f'{exc.message} (or set warninglists = "off")', f"{where}.warninglists") from None
    unknown = [n for n in names if not n or "/" in n or not (root / n / "list.json").is_file()]
    if unknown:
        raise ConfigError(
            f"unknown warning lists {unknown!r} (the installed lists are the directories of {root})",
            f"{where}.warninglists",
        )
    return names or sel


class Guard:
    """One plugin's guard, ready for ``to_stage_rows``: ``match`` (None when off) and the action."""

    def __init__(self, lists: WarningLists | None, action: str) -> None:
        self.lists = lists  # held: the shared copy lives as long as a guard uses it
        self.match = lists.match if lists is not None else None
        self.tag = action == "tag"
        if lists is None:
            self.signature = OFF
        else:
            names = ",".join(f"{i.name}@{i.version}" for i in lists.info())
            self.signature = f"{names};{action}"

    @property
    def names(self) -> tuple[str, ...]:
        return self.lists.names if self.lists is not None else ()


def _key(sel: Selection) -> tuple[str, ...] | str:
    return tuple(sel) if isinstance(sel, list) else sel


def load_lists(sel: Selection) -> WarningLists:
    """The loaded lists of a selection: the copy another plugin holds, else read now (seconds: call in a thread)."""
    key = _key(sel)
    with _lock:
        lists = _live.get(key)
        if lists is None:
            lists = WarningLists.load(list(sel) if isinstance(sel, list) else sel)
            _live[key] = lists
        return lists


async def load_guard(plugin: PluginConfig) -> Guard:
    """The guard of a plugin whose config was validated (``resolve``); loads the lists off the trio thread."""
    sel = plugin.warninglists
    if sel is None or sel == OFF:
        return Guard(None, plugin.warninglist_action)
    lists = await trio.to_thread.run_sync(load_lists, sel)
    return Guard(lists, plugin.warninglist_action)


__all__ = ["ACTIONS", "OFF", "Guard", "Selection", "load_guard", "load_lists", "resolve"]
