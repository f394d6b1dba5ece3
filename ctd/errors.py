"""The ctd error tree, grouped by what the caller does next.

::

    CtdError
    ├─ ConfigError            tell the user; a reload keeps the running config
    │   └─ RuleError          a filter that does not compile (.column, .exception: which one, or None)
    ├─ InvalidIndicator       skip this value, count it for its source
    ├─ AdapterError           raised by adapters, translated at their boundary
    │   ├─ SourceUnavailable  retry with exponential backoff (network, 5xx, 429; a longer .retry_after wins)
    │   │   └─ TimedOut       a pull or pass overran the plugin's timeout (.seconds): the same backoff
    │   ├─ AuthError          disable until the config is reloaded (401/403, bad secret)
    │   └─ UpstreamDataError  skip the batch, keep the checkpoint; retry at the next interval, not sooner
    ├─ StoreError             the store actor failed or is closed: retry with backoff
    │   ├─ StoreClosed
    │   ├─ StoreFull          state_dir has no space left: retry with backoff; the daemon stays up
    │   └─ StoreDamaged       the database is damaged ("malformed"): the store stopped; wait for a restore
    ├─ StartupError           ctd cannot start: one line for the operator and an exit code (ctd.exits)
    ├─ ActorStopped           the actor asked stopped (reload, shutdown) before answering: ask again
    └─ ControlError           a control request that cannot be served (message goes to ctdctl)
        ├─ BadRequest
        │   └─ NotFound       no running source or sharing by that name
        └─ PermissionDenied

What a source or sharing actor does with each is decided in one place,
``ctd.policy.next_attempt``; anything outside the tree is a bug: logged with
its traceback, then retried with backoff like an outage.
"""

from __future__ import annotations


class CtdError(Exception):
    """Root of every error ctd raises on purpose."""


class ConfigError(CtdError):
    """The configuration is invalid; ``location`` says where (``$.plugins.x.y`` or ``line 3``)."""

    def __init__(self, message: str, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{message} - at {location}" if location else message)


class RuleError(ConfigError):
    """A filter that does not compile: ``column`` is 1-based, ``exception`` the index of the
    exception it is in (None: the rule's filter itself)."""

    def __init__(self, message: str, column: int, exception: int | None = None) -> None:
        self.column = column
        self.exception = exception
        super().__init__(message)

    def __str__(self) -> str:
        where = f"exceptions[{self.exception}]: " if self.exception is not None else ""
        return f"{where}{self.message} at column {self.column}"


class InvalidIndicator(CtdError):
    """A value does not validate for its indicator type."""


class AdapterError(CtdError):
    """An adapter could not complete a call."""


class SourceUnavailable(AdapterError):
    """Transient: retry later with backoff. ``retry_after`` (seconds) when the peer said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TimedOut(SourceUnavailable):
    """A pull or a destination call overran its deadline (the plugin's ``timeout``)."""

    def __init__(self, what: str, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"{what} timed out after {seconds:g} s")


class AuthError(AdapterError):
    """Credentials rejected: the plugin stays disabled until the config is reloaded."""


class UpstreamDataError(AdapterError):
    """The peer sent data we cannot decode: skip it, keep the checkpoint."""


class StoreError(CtdError):
    """The store could not perform an operation."""


class StoreClosed(StoreError):
    """The store actor is gone (shutting down)."""


class StoreFull(StoreError):
    """The disk under state_dir is full: nothing can be written until space returns."""


class StoreDamaged(StoreError):
    """SQLite found the database damaged ("malformed"): the store actor stopped; restore from a backup."""


class StartupError(CtdError):
    """ctd cannot start (or run ``--once``): ``str()`` is the one line for the operator,
    ``exit_code`` the process's exit status (the table is ``ctd.exits``)."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class ActorStopped(CtdError):
    """The actor a request was sent to stopped (restarted by a reload, or shutting down) before answering."""


class ControlError(CtdError):
    """A control request failed; the message is shown to the ctdctl user."""


class BadRequest(ControlError):
    """Malformed or unknown control request."""


class NotFound(BadRequest):
    """The request names a source or sharing configuration that is not running."""


class PermissionDenied(ControlError):
    """The peer is not allowed to run this command."""


# Error text that reaches a log line or a status (``ctdctl sources``, the ledger) is capped:
# a peer can put anything in an error (a 100 MB line, a whole HTML page).
MAX_ERROR_TEXT = 500


def cap(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: ``"abc… (123456 chars)"``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


def describe(exc: BaseException, limit: int = MAX_ERROR_TEXT) -> str:
    """A one-line error from the whole cause chain, capped at ``limit`` characters (line breaks and runs of
    blanks become one space).

    Under trio a TLS failure's top exception has an empty message; the reason
    sits further down the ``__cause__``/``__context__`` chain. httpx wraps its
    transport's error as an argument, and trio's failed connect keeps each
    address's reason in an exception group: those are followed too, so a refused
    connection says "Connection refused" (once), not just "all attempts failed".
    """
    parts: list[str] = []
    total = -2  # the length of the whole text, uncut (separators included)
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(parts) < 8:
        seen.add(id(e))
        raw = _text(e)
        text = " ".join(raw[: limit + 1].split())  # one line; never join (copy) a 100 MB message
        if text and not any(text in p for p in parts):  # a cause already quoted adds nothing
            parts.append(text)
            total += len(raw) + 2
        e = _next(e)
    if not parts:
        return type(exc).__name__
    joined = ": ".join(parts)
    return joined if total <= limit else f"{joined[:limit]}… ({total} chars)"


def _next(e: BaseException) -> BaseException | None:
    # ``raise ... from None`` hides the context, as in a traceback.
    nxt = e.__cause__ if e.__cause__ is not None else None if e.__suppress_context__ else e.__context__
    if nxt is None and e.args and isinstance(e.args[0], BaseException):
        nxt = e.args[0]  # httpx.ConnectError(httpcore.ConnectError(OSError(...)))
    return nxt


def _text(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        # The group's message repeats its wrapper's; the reasons are in the leaves, once each.
        reasons = dict.fromkeys(_leaf_text(x) for x in _leaves(e))
        return "; ".join(r for r in reasons if r)
    return str(e)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for x in group.exceptions:
        out.extend(_leaves(x) if isinstance(x, BaseExceptionGroup) else [x])
    return out


def _leaf_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.rpartition(": ")[2]  # trio: "Error connecting to ('127.0.0.1', 80): Connection refused"
    return str(e)
