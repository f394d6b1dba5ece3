"""Fuzzing the control protocol: no input may crash the decoder or the server."""

from __future__ import annotations

import json
import socket

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctd.control.protocol import Request, decode_request
from ctd.control.server import serve_control
from tests.daemonproc import short_tmpdir

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
request_like = st.dictionaries(st.sampled_from(["v", "cmd", "args", "extra"]), json_values, max_size=4).map(
    lambda d: json.dumps(d).encode()
)


@settings(max_examples=500)
@given(line=st.binary(max_size=300) | request_like)
def test_decoder_never_crashes(line):
    """Any byte string decodes to a Request or raises ValueError, nothing else."""
    try:
        req = decode_request(line)
    except ValueError:
        return
    assert isinstance(req, Request) and isinstance(req.cmd, str) and isinstance(req.args, dict)


def _exchange(path: str, payload: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data
    finally:
        s.close()


async def test_server_survives_garbage(nursery):
    """Random garbage on many connections gets error replies and the server keeps answering."""
    path = str(short_tmpdir() / "c.sock")

    async def dispatch(request, peer):
        return {"echo": request.cmd}

    await nursery.start(serve_control, path, dispatch)
    payloads: list[bytes] = []

    @settings(max_examples=60, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=200) | request_like)
    def collect(p):
        payloads.append(p.replace(b"\n", b" ") + b"\n")

    collect()
    for p in payloads:
        reply = await trio.to_thread.run_sync(_exchange, path, p)
        assert reply == b"" or json.loads(reply.splitlines()[0])["v"] == 1
    good = await trio.to_thread.run_sync(_exchange, path, b'{"v": 1, "cmd": "ping", "args": {}}\n')
    assert json.loads(good)["data"] == {"echo": "ping"}
