"""Plugin-level values (``tags``, ``reputation``) across a pull that a reload interrupted.

A reload that changes a source's ``tags`` or ``reputation`` restarts its actor,
which resumes a half-done pull rather than starting over (a tenant-side
iterator cannot be rewound, so starting over could skip a page). The batches
committed before the reload carry the old values. So the resume point records
which values this cycle has used (under ``SUB_KEY``, beside the adapter's own
keys, which the adapter never sees), and a pull that ends having used other
values than the current ones has the current ones applied to everything it
committed (``Store.reapply_plugin_values``).

Limits, by construction: a reputation override that was removed cannot give
back each feed's own reputation (it was overwritten): those sightings keep the
old override until re-reported; a tag the feed itself reports that equals a
removed plugin tag is removed with it until re-reported.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ctd.config import PluginConfig

SUB_KEY = "ctd_plugin"


class Used(msgspec.Struct, frozen=True, kw_only=True):
    """The plugin-level values a pull cycle has applied so far (reputation 0: none)."""

    tags: tuple[str, ...] = ()
    reputations: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "reputations": list(self.reputations)}


def current(plugin: PluginConfig) -> Used:
    return Used(tags=tuple(sorted(set(plugin.tags))), reputations=(plugin.reputation or 0,))


def split(sub: dict | None) -> tuple[dict | None, Used | None]:
    """The adapter's resume point, and the values the interrupted pull used (None: not recorded)."""
    if not isinstance(sub, dict) or SUB_KEY not in sub:
        return sub, None
    rest = {k: v for k, v in sub.items() if k != SUB_KEY}
    try:
        used = msgspec.convert(sub[SUB_KEY], Used)
    except msgspec.ValidationError:
        used = None
    return rest, used


def merged(now: Used, earlier: Used | None) -> Used:
    if earlier is None:
        return now
    return Used(
        tags=tuple(sorted(set(now.tags) | set(earlier.tags))),
        reputations=tuple(sorted(set(now.reputations) | set(earlier.reputations))),
    )


def with_used(sub: dict | None, used: Used) -> dict | None:
    """The resume point to commit: the adapter's, plus the values used (nothing to resume: None)."""
    return None if sub is None else {**sub, SUB_KEY: used.to_json()}


def dropped(used: Used, now: Used) -> tuple[str, ...] | None:
    """The plugin tags to take off what this cycle committed; None when it used only the current values."""
    if used == now:
        return None
    return tuple(sorted(set(used.tags) - set(now.tags)))
