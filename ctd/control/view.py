"""What the command handlers need from the daemon.

``ctd.daemon.Daemon`` satisfies this Protocol; the control package never
imports ``ctd.daemon`` (the CLI hands the daemon to the handlers), so the
daemon can depend on control and not the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ctd.config import Config
    from ctd.rates import RateCounter
    from ctd.sharing.actor import ShareResult
    from ctd.sources.actor import PullResult
    from ctd.store import Store


class Actors(Protocol):
    """A supervisor's view: the running actors of one kind, by name."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Any: ...


class DaemonView(Protocol):
    config: Config
    mutes: dict[str, int]
    started_at: float
    ingest_rate: RateCounter
    share_rate: RateCounter

    # Read-only. Before the daemon has started them they raise ActorStopped ("ask again").
    @property
    def store(self) -> Store: ...

    @property
    def sources(self) -> Actors: ...

    @property
    def sharings(self) -> Actors: ...

    async def reload(self) -> dict[str, Any]: ...

    async def sync(self, name: str) -> PullResult: ...

    async def share(self, name: str, *, resync: bool = False, days: int | None = None) -> ShareResult: ...

    def wake_sharing(self, source: str | None = None, *, rule: str | None = None) -> None: ...

    def health(self) -> dict[str, Any]: ...
