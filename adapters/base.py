"""The adapter contract.

An adapter is a class registered under the ``ctd.adapters`` entry-point group.
It declares its own ``[plugins.NAME]`` keys as a nested ``Config`` Struct (the
core validates them with the whole file) and implements the capabilities it has:

* ``pull(ctx) -> AsyncIterator[Batch]``: fetch from ``ctx`` (checkpoint,
  cursor, sub-checkpoint) and yield batches; each batch's sub-checkpoint is
  committed together with it.
* ``check() -> str``: a connectivity test for ``ctdctl plugins check``.

Adapters are thin: no sleeps, retries or timeouts of their own. The actor that
drives them owns deadlines and backoff; adapters translate failures into the
``AdapterError`` subclasses of ``ctd.errors`` (retry / disable / skip).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol, runtime_checkable

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
