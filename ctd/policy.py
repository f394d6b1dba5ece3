"""What an actor does after a failed pull, pass or service: one decision for all of them.

The error tree (``ctd.errors``) groups errors by what the caller does next;
``next_attempt`` is that grouping in code, so the source and sharing actors
cannot drift apart::

    error (its real cause)        state      next attempt
    AuthError                     disabled   none until the config is reloaded
    SourceUnavailable, TimedOut   backoff    exponential backoff; a longer Retry-After wins
    UpstreamDataError             idle       at the next regular interval (sooner gets the same data)
    RecursionError                idle       the same: data nested deeper than a parser's stack
    StoreDamaged                  halted     none: the store stopped; a restore and a restart are needed
    any other CtdError            backoff    exponential backoff (StoreFull: a full disk, too)
    anything else (a bug)         backoff    exponential backoff; the actor logs the traceback

Backoff is 10 s doubling per consecutive failure up to one hour, with ±20%
jitter so that plugins failing together do not retry together. ``failures``
counts consecutive failures including this one; a success resets it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import trio

from ctd.errors import AuthError, CtdError, SourceUnavailable, StoreDamaged, TimedOut, UpstreamDataError

BACKOFF_BASE = 10.0
BACKOFF_CAP = 3600.0


class Attempt(NamedTuple):
    """The actor's state until its next attempt, and how long until then (seconds; inf: never)."""

    state: str
    delay: float


def next_attempt(
    exc: BaseException, failures: int, *, interval: float, rng: Callable[[], float] = random.random
) -> Attempt:
    """The state and delay after ``exc`` ended a pull or pass; ``interval`` is the actor's regular one."""
    cause = real_cause(exc)
    if isinstance(cause, AuthError):
        return Attempt("disabled", float("inf"))
    if isinstance(cause, (UpstreamDataError, RecursionError)):
        return Attempt("idle", interval)
    if isinstance(cause, StoreDamaged):
        return Attempt("halted", float("inf"))  # retrying cannot help: the store has stopped
    retry_after = cause.retry_after if isinstance(cause, SourceUnavailable) else None
    return Attempt("backoff", backoff_delay(failures, retry_after, rng))


def expected(exc: BaseException) -> bool:
    """Is ``exc`` (a real cause) one the tree names? Anything else is a bug, worth its traceback.

    A RecursionError is hostile data (nested deeper than a parser's stack) that an adapter did
    not translate: reported like bad data, without a traceback.
    """
    return isinstance(exc, (CtdError, trio.TooSlowError, RecursionError))


def backoff_delay(failures: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with ±20% jitter; a peer's Retry-After wins when longer."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))
    delay *= 0.8 + 0.4 * rng()
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def real_cause(exc: BaseException) -> BaseException:
    """The error a nursery's ExceptionGroup stands for.

    A task's failure reaches the caller wrapped in a group, often next to the
    Cancelled of its siblings. The first error the tree knows wins (it says what
    to do next), else the first other error; a group of Cancelled only stays as is.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [real_cause(e) for e in exc.exceptions]
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    known = [e for e in errors if isinstance(e, CtdError)]
    return (known or errors or [exc])[0]


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """``trio.fail_after`` whose error says what timed out: ``TimedOut("pull timed out after 600 s")``."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TimedOut(what, seconds) from None
