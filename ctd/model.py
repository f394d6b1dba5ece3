"""The data model, and the adapter contract both ways: what the core and an adapter may ask of each other.

An adapter imports this module (and the shared HTTP layer, ``ctd.adapters.http``;
a server adapter ``ctd.accept``) and nothing else of ctd: the names it needs from
elsewhere (canonicalisation and the value gate, the error tree, times and
durations) are re-exported here. The core never imports an adapter
package; it finds adapter classes through ``ctd.plugins``.

The contract is the ``Adapter`` class below: every hook the core may call,
with the default an adapter gets when it leaves the hook out, so the core calls
hooks unconditionally and never probes for them. Capabilities are declared,
not discovered: ``can_pull``, ``can_push`` (with ``ACTIONS``) and ``can_serve``.
``ctd.plugins`` checks them once, when it loads the class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

import msgspec

# Re-exported for adapters, so that an adapter imports ctd.model only.
# (ctd.canon reads INDICATOR_TYPES lazily: it does not import this module.)
from ctd.canon import canonicalize, host_of_url
from ctd.errors import (
    AdapterError,
    AuthError,
    ConfigError,
    InvalidIndicator,
    SourceUnavailable,
    UpstreamDataError,
    describe,
)
from ctd.times import Duration, iso, now, parse_duration, parse_time
from ctd.valuegate import value_problem

if TYPE_CHECKING:
    import httpx

IndicatorType = Literal[
    "url",
    "domain",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr4",
    "cidr6",
    "md5",
    "sha1",
    "sha256",
    "email",
]
INDICATOR_TYPES: tuple[str, ...] = (
    "url",
    "domain",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr4",
    "cidr6",
    "md5",
    "sha1",
    "sha256",
    "email",
)

Severity = Literal["unknown", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("unknown", "low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

DEFAULT_REPUTATION = 5


# --- the pull side: what a source adapter yields ------------------------------------


class Sighting(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One source's report of one indicator. ``type``/``value`` are canonical.

    ``first_seen``/``last_seen`` are the source's own times (a feed's last-seen
    column, STIX ``modified``): metadata that rules can filter on, never what
    ages the indicator. When the source reported it *to ctd* is the ingest time
    of the batch that carries it (``IngestBatch.now``): the source entry then
    expires ``aging_days`` later, unless ``expires_at`` (the source's own
    explicit expiry: ``valid_until``, ``expiration``, ``expires_at``) is set.
    """

    type: str
    value: str
    first_seen: int | None = None
    last_seen: int | None = None
    reputation: int | None = None
    severity: str = "unknown"
    tags: tuple[str, ...] = ()
    comments: str = ""
    reference: str = ""
    expires_at: int | None = None  # the feed's own explicit expiry, if any
    retracted: bool = False  # the source revokes this indicator


# Reason classes of a ``Rejected``: what an operator does about it differs.
MALFORMED = "malformed"  # the record or its value is broken (counted ``invalid``): tell the publisher
UNSUPPORTED_TYPE = "unsupported_type"  # well formed, of a type ctd does not hold (counted ``unsupported``)
UNSUPPORTED_PATTERN = "unsupported_pattern"  # a STIX pattern that is no list of values (``unsupported``)
ALLOWLISTED = "allowlisted"  # stored, but on the allowlist: never active (set by the core, not adapters)
FIELD = "field"  # an optional field could not be read and was dropped; the IoC was kept (a field warning)
REJECT_KINDS: tuple[str, ...] = (MALFORMED, UNSUPPORTED_TYPE, UNSUPPORTED_PATTERN, ALLOWLISTED, FIELD)


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    """A record (or one field of a record) an adapter could not use: counted, logged and kept per source.

    ``where`` names the record as the source numbers it (``line 17``, ``item 3``, a STIX id, a
    MISP event and attribute); ``reason`` says what was wrong with which part, quoting it;
    ``kind`` is its reason class (``REJECT_KINDS``). A ``FIELD`` warning rejects no record.
    """

    where: str  # e.g. "line 17"
    reason: str
    kind: str = MALFORMED


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter's ``pull`` yields: sightings plus where to resume.

    ``sub_checkpoint`` is committed in the same transaction as the sightings, so
    a pull interrupted after this batch resumes right after it. ``cursor`` (if
    not None) replaces the source's durable adapter state (ETag, server date,
    iterator index...) in that same transaction. ``snapshot_end`` says this
    batch completes a full snapshot of the source: every value of this source
    not reported since the snapshot began is retracted for this source.
    ``snapshot_start`` says a resumed pull could not resume (the source changed
    while ctd was down: another file, another ETag) and starts a new snapshot
    with this batch: what the interrupted pull committed before does not count
    for it, so what the new content lacks is retracted at its end.
    """

    sightings: list[Sighting]
    rejected: list[Rejected] = []
    sub_checkpoint: dict | None = None
    cursor: dict | None = None
    snapshot_end: bool = False
    snapshot_start: bool = False


class PullProgress:
    """How far a running pull has got, for progress lines and ``ctdctl sources``/``sync``.

    The source actor counts records itself (every batch's sightings and rejects);
    an adapter adds what only it knows, as it reads: ``bytes_read`` of
    ``bytes_total`` (a Content-Length, a file's size) and ``pages_read`` of
    ``pages_total`` (TAXII/MISP pages, MISP feed events), a total left None
    when unknown. Plain attributes: updating them costs nothing.
    """

    __slots__ = ("bytes_read", "bytes_total", "pages_read", "pages_total", "records")

    def __init__(self) -> None:
        self.bytes_read = 0
        self.bytes_total: int | None = None
        self.pages_read = 0
        self.pages_total: int | None = None
        self.records = 0  # counted by the source actor

    def fraction(self) -> float | None:
        """Done, 0..1, when a total is known (bytes first, then pages); None otherwise."""
        if self.bytes_total:
            return min(1.0, self.bytes_read / self.bytes_total)
        if self.pages_total:
            return min(1.0, self.pages_read / self.pages_total)
        return None


class PullContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a pull starts from."""

    since: int  # last successful cycle start, or now - initial_range on the first run
    now: int
    cursor: dict | None = None  # the adapter's durable state from the last batch
    sub_checkpoint: dict | None = None  # resume point of a half-done pull
    progress: PullProgress = msgspec.field(default_factory=PullProgress)  # the adapter adds bytes and pages


# --- the push side: what a destination adapter receives ---------------------------------


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
    # The destination's id for the entry ctd created for this value (``PushResult.ids`` of an
    # earlier push, kept in the delivery ledger); None when ctd recorded none. Adapters delete
    # by it, so they never remove an entry ctd did not create.
    remote_id: str | None = None


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a destination did with a push: values it refused, with its reasons.

    Everything not in ``rejected`` was accepted. A failure of the whole call
    (network, 5xx, 429) is raised as ``SourceUnavailable`` instead, so nothing
    is marked shared that was not. ``ids`` names the destination's id of the
    entry created (or kept) for an accepted value; the ledger records it and
    hands it back as ``ShareItem.remote_id`` (to a later push, and to ``retract``).
    """

    rejected: dict[str, str] = {}
    ids: dict[str, str] = {}
    # The expiry the destination gave an accepted value when it is not ``ShareItem.expires_at``
    # (its default for an item without one, or its cap): the ledger re-pushes in time from it.
    expires: dict[str, int | None] = {}


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
    # The target's changes take effect only after a second call (``Adapter.apply``: Netskope's
    # deploy, a commit or publish step). The ledger then records an IoC as shared or retracted
    # only once ``apply`` succeeded, and a pending apply survives a failed pass and a restart.
    needs_apply: bool = False
    # The target enforces ``ShareItem.expires_at`` itself (an EDR's indicator expiry): an IoC
    # whose expiry moved later is pushed again before the destination's copy lapses.
    carries_expiry: bool = False


# --- a full list, handed over in chunks -----------------------------------------------


class ListWriter:
    """A full list on its way to a full-replace target, in chunks (what ``Adapter.open_list`` returns).

    The sharing actor reads the planned list from the store a chunk at a time,
    newest first, and calls ``write`` for each chunk in order, then exactly one
    of ``commit`` (the target now holds what was written) or ``discard`` (the
    list turned out unchanged, or the delivery failed or was cancelled: the
    target keeps what it had). Nothing holds the whole list unless the writer
    chooses to: a list file is written to a temporary file as it comes and
    renamed over the old one at ``commit``.
    """

    async def write(self, items: list[ShareItem]) -> dict[str, str]:
        """Take the next chunk; return the values of it the target refuses (value -> reason)."""
        raise NotImplementedError

    async def commit(self) -> PushResult:
        """Make the target hold what was written; ``rejected``: refusals found only now, by value."""
        raise NotImplementedError

    async def discard(self) -> None:
        """Leave the target as it was and release what the writer holds (safe to call again)."""


class CollectedList(ListWriter):
    """The writer of an adapter that cannot stream: it collects the chunks and, at ``commit``,
    hands the whole list to ``Adapter.replace`` (a destination API that takes one body does)."""

    def __init__(self, adapter: Adapter, action: str, params: Any) -> None:
        self.adapter, self.action, self.params = adapter, action, params
        self.items: list[ShareItem] = []

    async def write(self, items: list[ShareItem]) -> dict[str, str]:
        self.items.extend(items)
        return {}

    async def commit(self) -> PushResult:
        items, self.items = self.items, []
        return await self.adapter.replace(self.action, self.params, items)

    async def discard(self) -> None:
        self.items = []


# --- the adapter contract ------------------------------------------------------------

T = TypeVar("T")


class BindContext(Protocol):
    """What an adapter's ``bind`` may read of the rest of the configuration."""

    @property
    def plugin(self) -> str:
        """The plugin's name (``[plugins.NAME]``)."""
        ...

    @property
    def state_dir(self) -> str:
        """``[daemon] state_dir``: where the daemon keeps its files."""
        ...

    def tenant(self, name: str, tp: type[T]) -> T:
        """``[tenants.NAME]`` validated against ``tp`` (secrets resolved); ValueError if there is none."""
        ...


class NoOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``Config`` of an adapter that has no keys of its own."""


class Adapter:
    """Base of every adapter: the whole contract, each optional hook with its default.

    A subclass is registered under the ``ctd.adapters`` entry-point group (or
    named as ``package.module:Class``) and declares:

    * ``Config``: a frozen Struct of its own ``[plugins.NAME]`` keys, validated
      with the whole file. Secret keys are typed ``Secret``.
    * its capabilities: ``can_pull`` (implements ``pull``), ``can_push`` (offers
      ``ACTIONS`` and implements ``push``/``retract`` for incremental actions,
      ``replace`` for full ones), ``can_serve`` (implements ``serve``).

    The core builds an instance with ``open_adapter(name, plugin)``
    (``ctd.plugins``): ``make_client`` makes its HTTP client, the instance gets
    it, and when the actor ends ``aclose`` runs, then the client is closed.

    Adapters are thin: no sleeps, retries or timeouts of their own. The actor
    that drives one owns deadlines and backoff; an adapter translates failures
    into the ``AdapterError`` subclasses (retry / disable / skip the batch).

    Where a destination's change needs a second call to take effect (Netskope's
    deploy, a publish or commit step), the action declares ``needs_apply`` and
    the adapter implements ``apply(action, params)``: ``push``/``retract`` then
    only stage changes, and the sharing actor calls ``apply`` once per pass,
    after the last batch. The ledger keeps a pending-apply marker per sharing,
    committed with the batches it covers; an IoC becomes ``shared`` or
    ``retracted`` only once ``apply`` succeeded, and a failed or interrupted
    apply is run again by the next pass (also after a restart). For a
    full-replace action, ``apply`` follows each delivered list.

    A full-replace list reaches the adapter through ``open_list``: a
    ``ListWriter`` that takes it in chunks, newest first. An adapter that can
    write as it goes (a list file) returns its own writer, so memory does not
    grow with the list; the default collects the chunks and calls ``replace``
    with the whole list, for a destination whose API takes one body.
    """

    Config: ClassVar[type[msgspec.Struct]] = NoOptions
    can_pull: ClassVar[bool] = False
    can_push: ClassVar[bool] = False  # then ACTIONS is not empty
    can_serve: ClassVar[bool] = False
    ACTIONS: ClassVar[Mapping[str, ActionSpec]] = {}
    # The plugin's ``warninglists`` when the config leaves it unset (ctd.guard): "default" for
    # adapters that take values from prose (rss, webpage), "off" for sources meant as indicators.
    default_warninglists: ClassVar[Literal["default", "off"]] = "off"

    def __init__(self, name: str, config: Any, client: httpx.AsyncClient | None = None) -> None:
        self.name = name
        self.config = config
        self.client = client

    # -- while the config loads (class level: no instance exists yet) -----------------

    @classmethod
    def check_plugin(cls, pull: bool, options: Any) -> None:
        """Cross-key checks of a plugin's options (``pull`` is the common key); raise ValueError."""

    @classmethod
    def bind(cls, options: Any, ctx: BindContext) -> Any:
        """Complete the options from the rest of the config (a tenant table, the state dir); ValueError if not."""
        return options

    @classmethod
    def verifies_tls(cls, options: Any) -> bool:
        """False when the options turn TLS certificate checks off; the operator is warned at every load."""
        return True

    @classmethod
    def target(cls, action: str, params: Any) -> str | None:
        """What one sharing writes (a list name); two sharings may not write the same target. None: per value."""
        return None

    @classmethod
    def limits(cls, action: str, params: Any) -> tuple[int | None, int | None]:
        """(max entries, max bytes) of this target, within the ActionSpec's; None: the spec's own."""
        return None, None

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def make_client(cls, options: Any) -> httpx.AsyncClient | None:
        """The HTTP client for these options (from ``ctd.adapters.http.make_client``); None: no HTTP."""
        return None

    async def aclose(self) -> None:
        """Release what the adapter opened itself; ``open_adapter`` closes the client it made after this."""

    # -- source --------------------------------------------------------------------------

    def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Fetch from ``ctx`` (since, cursor, sub-checkpoint) and yield batches (``can_pull``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot pull")

    async def check(self) -> str | None:
        """A connectivity test for ``ctdctl plugins check``: what was reached. None: no check."""
        return None

    # -- destination (can_push) --------------------------------------------------------------

    async def check_target(self, action: str, params: Any) -> str | None:
        """For ``ctdctl plugins check``: can this sharing's target be written (a directory writable...)?

        Raise an ``AdapterError`` saying what is wrong; return what was found. None: no such check
        (the connectivity test of ``check`` covers it).
        """
        return None

    async def push(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        """Add or update ``items`` at an incremental target."""
        raise NotImplementedError(f"{type(self).__name__} cannot push")

    async def retract(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        """Withdraw ``items`` from an incremental target (absent ones count as done)."""
        raise NotImplementedError(f"{type(self).__name__} cannot retract")

    async def replace(self, action: str, params: Any, items: list[ShareItem]) -> PushResult:
        """Make a full-replace target hold exactly ``items`` (newest first); what ``CollectedList`` calls."""
        raise NotImplementedError(f"{type(self).__name__} cannot replace a list")

    async def open_list(self, action: str, params: Any) -> ListWriter:
        """Start delivering a whole list to a full-replace target (see ``ListWriter``).

        Default: collect it and hand it to ``replace`` at commit. Override to write as
        the chunks come (the ``file`` and ``edl`` adapters: a temporary file renamed at commit).
        """
        return CollectedList(self, action, params)

    async def apply(self, action: str, params: Any) -> None:
        """Make the changes staged by ``push``/``retract``/``replace`` take effect (``needs_apply``).

        Called once per pass after the last batch, and again after a failure or a
        restart until it succeeds: it must be safe to repeat.
        """

    async def recover(self, action: str, params: Any) -> list[str]:
        """Clean up what an interrupted delivery to this target left behind (a killed write's
        temporary files); called once when a sharing starts, before its first pass. Returns
        what was removed, for the log."""
        return []

    def target_present(self, action: str, params: Any) -> bool:
        """Whether a full-replace target still exists; if not, it is rewritten even when unchanged."""
        return True

    # -- served (can_serve) --------------------------------------------------------------

    async def serve(self, task_status: Any = None) -> None:
        """Run a service (the EDL web server) until cancelled; ``task_status.started()`` once listening."""
        raise NotImplementedError(f"{type(self).__name__} serves nothing")


# --- config values ---------------------------------------------------------------------


class Secret(str):
    """A secret config value (token, password, key): a ``str`` that never shows in a repr.

    Adapters declare secret fields with this type, so printing or logging an
    options Struct shows ``'***'``; the value itself works wherever a str does.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


__all__ = [
    "ALLOWLISTED",
    "DEFAULT_REPUTATION",
    "FIELD",
    "INDICATOR_TYPES",
    "MALFORMED",
    "REJECT_KINDS",
    "UNSUPPORTED_PATTERN",
    "UNSUPPORTED_TYPE",
    "SEVERITIES",
    "SEVERITY_RANK",
    "ActionSpec",
    "Adapter",
    "AdapterError",
    "AuthError",
    "Batch",
    "BindContext",
    "ConfigError",
    "Duration",
    "IndicatorType",
    "InvalidIndicator",
    "CollectedList",
    "ListWriter",
    "NoOptions",
    "PullContext",
    "PullProgress",
    "PushResult",
    "Rejected",
    "Secret",
    "Severity",
    "ShareItem",
    "Sighting",
    "SourceUnavailable",
    "UpstreamDataError",
    "canonicalize",
    "describe",
    "host_of_url",
    "iso",
    "now",
    "parse_duration",
    "parse_time",
    "value_problem",
]
