"""ask(): one-shot request/reply between actors, the only way the daemon waits on an answer.

The asker wraps a plain-data request in an :class:`Ask` together with a fresh
reply channel (buffer 1) and waits for one :class:`outcome.Outcome`. The actor
answers with :func:`answer`, which also closes the reply channel. Every way an
actor can end closes the replies it still owes, so an asker never waits on an
actor that is gone:

* a request the actor took from its inbox is answered or closed when the actor
  is cancelled (``with ask.reply:`` around the work, or a ``finally`` that
  closes a list of collected requests);
* requests still queued in the inbox when the actor exits are closed by
  :func:`close_inbox`, which also closes the inbox so later asks fail at once.

An asker that sees its reply channel closed (or the inbox closed) raises the
error it was given: :class:`ctd.errors.ActorStopped` unless it says otherwise.
An asker that is itself cancelled simply never reads its reply; the actor's
``send_nowait`` then finds the channel broken and drops the answer.
"""

from __future__ import annotations

from typing import Any

import msgspec
import outcome
import trio

from ctd.errors import ActorStopped, CtdError

__all__ = ["Ask", "Reply", "answer", "ask", "close_inbox"]

Reply = trio.MemorySendChannel  # of outcome.Outcome, buffer 1, one answer then closed


class Ask(msgspec.Struct, frozen=True):
    """A request in an actor's inbox with the channel its one answer goes to."""

    request: Any
    reply: Reply


async def ask(
    inbox: trio.MemorySendChannel[Any],
    request: Any,
    *,
    who: str = "the actor",
    stopped: type[CtdError] = ActorStopped,
) -> Any:
    """Send ``request`` to the actor behind ``inbox`` and return its answer (or raise its error).

    Raises ``stopped`` (with ``who`` in the message) when the actor is gone or
    stops before answering: shut down, or cancelled by a reload.
    """
    reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome[Any]](1)
    async with reply_recv:
        try:
            await inbox.send(Ask(request, reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reply_send.close()
            raise stopped(f"{who} is not running") from None
        try:
            result = await reply_recv.receive()
        except trio.EndOfChannel:
            raise stopped(f"{who} stopped before answering (restarted by a reload, or shutting down)") from None
    return result.unwrap()


def answer(reply: Reply, result: outcome.Outcome[Any]) -> None:
    """Send the one answer and close the reply channel; an asker that went away is not an error."""
    try:
        reply.send_nowait(result)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        pass  # the asker was cancelled (or already answered): nobody is waiting
    finally:
        reply.close()


def close_inbox(inbox: trio.MemoryReceiveChannel[Any]) -> None:
    """Close ``inbox`` and the reply channel of every request still queued in it.

    Synchronous (no checkpoint), so no request can slip in between the drain and
    the close: later asks see the inbox closed and fail at once.
    """
    while True:
        try:
            msg = inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        if isinstance(msg, Ask):
            msg.reply.close()
    inbox.close()
