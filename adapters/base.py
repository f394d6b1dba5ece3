"""The adapter contract.

An adapter is a class registered under the ``ctd.adapters`` entry-point group.
It declares its own ``[plugins.NAME]`` keys as a nested ``Config`` Struct (the
core validates them with the whole file) and implements the capabilities it has:

* ``pull(ctx) -> AsyncIterator[Batch]``: fetch from ``ctx`` (checkpoint,
  cursor, sub-checkpoint) and yield batches; each batch's sub-checkpoint is
  committed together with it.
* ``check() -> str``: a connectivity test for ``ctdctl plugins check``.

Secret keys (tokens, passwords) are typed ``ctd.model.Secret`` so that no repr of
the options shows them. Adapters are thin: no sleeps, retries or timeouts of their own. The actor that
drives them owns deadlines and backoff; adapters translate failures into the
``AdapterError`` subclasses of ``ctd.errors`` (retry / disable / skip).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx
import msgspec

from ctd.model import Batch, PullContext


@runtime_checkable
class SourceAdapter(Protocol):
    """What a pulling adapter provides."""

    Config: ClassVar[type[msgspec.Struct]]
    can_pull: ClassVar[bool]

    def __init__(self, name: str, config: Any, client: httpx.AsyncClient | None) -> None: ...

    def pull(self, ctx: PullContext) -> AsyncIterator[Batch]: ...

    async def check(self) -> str: ...


# --- the push side ---------------------------------------------------------------


class ShareItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One indicator as a destination receives it (effective metadata)."""

    type: str
    value: str
    severity: str
    reputation: int
    tags: tuple[str, ...]
    comments: str
    reference: str
    first_seen: int | None
    last_seen: int | None
    expires_at: int | None
    sources: tuple[str, ...]


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a destination did with a push: values it refused, with its reasons.

    Everything not in ``rejected`` was accepted. A failure of the whole call
    (network, 5xx, 429) is raised as ``SourceUnavailable`` instead, so nothing
    is marked shared that was not.
    """

    rejected: dict[str, str] = {}


class ActionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A target a destination adapter offers (``action`` in ``[sharing.NAME]``).

    ``mode``: ``incremental`` destinations get ``push``/``retract`` of what
    changed; ``full`` destinations get the whole current list via ``replace``
    each time it changes. Limits are honoured newest-first by the sharing
    layer; an entry's size is its UTF-8 length (``size = "text"``) or its
    JSON-escaped length (``"json"``) plus ``entry_overhead`` bytes.
    """

    description: str
    mode: Literal["incremental", "full"]
    params: type[msgspec.Struct]
    max_entries: int | None = None
    max_bytes: int | None = None
    size: Literal["text", "json"] = "text"
    entry_overhead: int = 1
    batch_size: int = 1000
    types: tuple[str, ...] | None = None  # indicator types the target accepts (None: all)


@runtime_checkable
class DestinationAdapter(Protocol):
    """What a pushing adapter provides; ``ACTIONS`` maps action names to specs."""

    ACTIONS: ClassVar[dict[str, ActionSpec]]
    can_push: ClassVar[bool]

    @classmethod
    def target(cls, action: str, params: Any) -> str | None: ...

    @classmethod
    def limits(cls, action: str, params: Any) -> tuple[int | None, int | None]: ...

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult: ...

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult: ...

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult: ...

    # Optional: ``target_present(action, params) -> bool``; a full-replace target
    # that is missing (a deleted list file) is rewritten even when unchanged.
