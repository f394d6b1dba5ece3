"""A small HTTP/1.1 server for the Prometheus endpoint, on trio with h11 (as the EDL server).

It serves one thing: ``GET /metrics`` (and ``HEAD``), rendered by an async
callback for each scrape. Scrapers are untrusted like any client: connections
are capped (``MAX_CONNECTIONS``; one over the cap is closed at once), the
request head must arrive within ``REQUEST_TIMEOUT`` and be at most
``MAX_HEAD`` bytes, the response must be taken within ``SEND_TIMEOUT``, and
each connection carries one request (``Connection: close``). A bug or a bad
client costs one connection, never the server; ``trio.Cancelled`` is never caught.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Final

import h11
import structlog
import trio

log = structlog.get_logger("ctd.metrics")

MAX_CONNECTIONS: Final = 16
REQUEST_TIMEOUT: Final = 10.0
SEND_TIMEOUT: Final = 30.0
MAX_HEAD: Final = 8192
PATH: Final = b"/metrics"
_ADDRESS = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})")

Render = Callable[[], Awaitable[tuple[bytes, str]]]  # () -> (body, content type)


def parse_address(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> (host, port); raises ValueError saying what is wrong."""
    m = _ADDRESS.fullmatch(value.strip())
    if not m or not 0 < int(m["port"]) <= 65535:
        raise ValueError(f"metrics must be HOST:PORT or [IPV6]:PORT (e.g. 127.0.0.1:9464), got {value!r}")
    return m["v6"] or m["host"], int(m["port"])


async def serve_metrics(
    address: str, render: Render, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on ``address`` and answer scrapes until cancelled; ``started`` with the bound (host, port).

    Raises OSError when the address cannot be bound (the caller logs it and retries).
    """
    host, port = parse_address(address)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[:2]
    log.info("metrics endpoint listening", ctd_event="metrics_listening", address=f"{bound[0]}:{bound[1]}")
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                return  # over the cap: closed at once (a scraper retries at its next interval)
            try:
                await _serve(stream, render)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.ProtocolError):
                pass
            except Exception:
                log.exception("metrics_connection_failed")
            finally:
                slots.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started((str(bound[0]), int(bound[1])))


async def _serve(stream: trio.SocketStream, render: Render) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    request: h11.Request | None = None
    with trio.fail_after(REQUEST_TIMEOUT):
        while request is None:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(4096)
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.ConnectionClosed):
                return
    status, body, ctype = 200, b"", "text/plain; charset=utf-8"
    if request.method not in (b"GET", b"HEAD"):
        status, body = 405, b"only GET and HEAD\n"
    elif request.target.split(b"?", 1)[0] != PATH:
        status, body = 404, b"metrics are at /metrics\n"
    else:
        body, ctype = await render()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
    if status == 405:
        headers.append(("Allow", "GET, HEAD"))
    with trio.fail_after(SEND_TIMEOUT):
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
        if request.method != b"HEAD":
            await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
