"""The EDL server's resource caps, driven over real loopback sockets: response deadline,
connection caps answered 503, TE+CL requests closed, the request-head size limit."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager

import trio

from ctd.adapters.edl.server import ServerSettings, serve_edl

LINE = b"a.example\n"


@asynccontextmanager
async def server(tmp_path, size: int = 1000 * len(LINE), **kw):
    """A real EDL server on 127.0.0.1:0 serving ``urls.txt`` of ``size`` bytes; yields (host, port)."""
    (tmp_path / "urls.txt").write_bytes(LINE * (size // len(LINE)))
    s = ServerSettings(host="127.0.0.1", port=0, lists_dir=str(tmp_path), **kw)
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_edl, s)
        nursery.cancel_scope.cancel()


async def connect(addr, source: str | None = None, rcvbuf: int | None = None) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    if source is not None:
        await sock.bind((source, 0))
    await sock.connect(addr)
    return sock


async def read_all(sock: trio.socket.SocketType) -> bytes:
    """Everything until the server closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def read_response(sock: trio.socket.SocketType) -> bytes:
    """One response (head and a Content-Length body), leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            v
            for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
            if k.strip().lower() == b"content-length"
        )
    )
    while len(body) < length:
        body += await sock.recv(65536)
    return head


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


GET = b"GET /edl/urls.txt HTTP/1.1\r\nHost: x\r\n\r\n"
GET_CLOSE = b"GET /edl/urls.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_slow_reader_is_cut_off_at_the_response_deadline(tmp_path):
    """A reader taking each chunk well within send_timeout is cut off once the response exceeds response_timeout."""
    size = 8 << 20
    # Tiny deadline, generous per-chunk timeout: only a per-response deadline can end this.
    async with server(tmp_path, size, send_timeout=30, response_timeout=0.5) as addr:
        sock = await connect(addr, rcvbuf=8192)
        await sock.send(GET_CLOSE)
        got = 0
        try:
            # 4 KiB per 5 ms at most: a chunk is taken in 80 ms, the whole list would take 10 s.
            while chunk := await sock.recv(4096):
                got += len(chunk)
                await trio.sleep(0.005)
        except ConnectionResetError:
            pass
        sock.close()
    assert 0 < got < size // 4


async def test_second_connection_from_one_client_gets_503_while_another_client_is_served(tmp_path):
    """Past max_connections_per_client a client's new connection is answered 503 + Retry-After; another IP is served."""
    async with server(tmp_path, max_connections_per_client=1, retry_after=7) as addr:
        first = await connect(addr)
        await first.send(GET)  # keep-alive: after its response the connection stays open, holding the slot
        assert (await read_response(first)).startswith(b"HTTP/1.1 200 ")
        second = await connect(addr)
        await second.send(GET)
        refused = await read_all(second)
        other = await connect(addr, source="127.0.0.2")
        await other.send(GET_CLOSE)
        served = await read_all(other)
        for s in (first, second, other):
            s.close()
    assert refused.startswith(b"HTTP/1.1 503 ") and header(refused, b"retry-after") == b"7"
    assert served.startswith(b"HTTP/1.1 200 ") and served.endswith(LINE)


async def test_connection_over_the_global_cap_gets_503_not_a_reset(tmp_path):
    """Past max_connections a new connection is answered 503 + Retry-After, not reset."""
    async with server(tmp_path, max_connections=1) as addr:
        first = await connect(addr)
        await first.send(GET)
        assert (await read_response(first)).startswith(b"HTTP/1.1 200 ")
        second = await connect(addr, source="127.0.0.2")
        await second.send(GET)
        refused = await read_all(second)
        first.close()
        second.close()
    assert refused.startswith(b"HTTP/1.1 503 ") and header(refused, b"retry-after") is not None
    assert header(refused, b"connection") == b"close"


async def test_transfer_encoding_with_content_length_closes_the_connection(tmp_path):
    """A request with both Transfer-Encoding and Content-Length is answered and the connection closed (RFC 9112 6.1)."""
    async with server(tmp_path) as addr:
        sock = await connect(addr)
        await sock.send(
            b"GET /edl/urls.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        )
        head = await read_response(sock)
        rest = await read_all(sock)  # returns: the server closed
        sock.close()
    assert header(head, b"connection") == b"close" and rest == b""


def head_of(size: int) -> bytes:
    """A GET whose request head (request line, fields, blank line) is exactly ``size`` bytes."""
    base = b"GET /edl/urls.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: \r\n\r\n"
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(base)))


async def test_request_head_limit_is_16_kib(tmp_path):
    """A request head of 16384 bytes is served; one of 16385 bytes is answered 431."""
    assert len(head_of(16384)) == 16384
    async with server(tmp_path) as addr:
        results = []
        for size in (16384, 16385):
            sock = await connect(addr)
            await sock.send(head_of(size))
            results.append((await read_all(sock))[:13])
            sock.close()
    assert results == [b"HTTP/1.1 200 ", b"HTTP/1.1 431 "]


def test_gate_counts_per_client_and_bounds_refusals():
    """The gate serves within both caps, answers as many again 503, drops the rest, and frees slots on leave."""
    from ctd.adapters.edl.server import Gate

    g = Gate(ServerSettings(host="127.0.0.1", port=0, lists_dir="/x", max_connections=2, max_connections_per_client=1))
    assert [g.enter(ip) for ip in ("a", "a", "b", "c", "c")] == ["serve", "refuse", "serve", "refuse", "drop"]
    g.leave("a", "serve")
    g.leave("a", "refuse")
    assert g.per_client == {"b": 1} and g.enter("a") == "serve" and g.enter("c") == "refuse"
