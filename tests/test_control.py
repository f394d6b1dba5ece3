"""The control server: socket setup, framing, replies, streaming, robustness."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import msgspec
import pytest
import structlog
import trio

from ctd.control.protocol import MAX_REQUEST_LINE, Peer, Request
from ctd.control.server import SocketInUseError, serve_control
from ctd.ctdctl.main import ControlClient, DaemonError
from ctd.errors import BadRequest, CtdError, PermissionDenied


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # tmp_path can exceed the 107-byte limit of a Unix socket path.
    d = tempfile.mkdtemp(prefix="ctdt", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: str) -> str:
    return os.path.join(sock_dir, "ctd.sock")


class Recorder:
    """A dispatcher for tests: a few commands, and a record of what it saw."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, Peer]] = []
        self.stream_closed = trio.Event()

    async def __call__(self, request: Request, peer: Peer) -> Any:
        self.requests.append((request, peer))
        match request.cmd:
            case "echo":
                return {"args": request.args}
            case "peer":
                return peer
            case "count":
                return self._count(int(request.args["n"]))
            case "forever":
                return self._forever()
            case "fail_midway":
                return self._fail_midway()
            case "denied":
                raise PermissionDenied("uid 1234 may not run denied")
            case "ctd_error":
                raise CtdError("no source named 'x'")
            case "boom":
                raise RuntimeError("kaboom")
            case _:
                raise BadRequest(f"unknown command {request.cmd!r}")

    async def _count(self, n: int) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i}

    async def _forever(self) -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"pad": "x" * 1000}
                await trio.lowlevel.checkpoint()
        finally:
            self.stream_closed.set()

    async def _fail_midway(self) -> AsyncIterator[int]:
        yield 1
        yield 2
        raise CtdError("store went away")


async def start_server(nursery: trio.Nursery, path: str, dispatch: Any = None, **kw: Any) -> Recorder:
    rec = dispatch or Recorder()
    await nursery.start(partial(serve_control, path, rec, **kw))
    return rec


def raw_exchange(path: str, payload: bytes, *, shut_write: bool = True) -> list[bytes]:
    """Send raw bytes, return the reply lines until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(payload)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        with s.makefile("rb") as f:
            return f.readlines()


async def call(path: str, cmd: str, **args: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: ControlClient(path).call(cmd, **args))


async def test_socket_mode_is_0660(nursery: trio.Nursery, sock_path: str) -> None:
    """The control socket is a socket with mode 0660."""
    await start_server(nursery, sock_path)
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


async def test_parent_directory_created_0750(nursery: trio.Nursery, sock_dir: str) -> None:
    """A missing parent directory is created with mode 0750."""
    path = os.path.join(sock_dir, "run", "ctd.sock")
    await start_server(nursery, path)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o750


async def test_socket_owned_by_named_group(nursery: trio.Nursery, sock_path: str) -> None:
    """socket_group names the group that owns the socket."""
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    await start_server(nursery, sock_path, socket_group=group)
    assert os.stat(sock_path).st_gid == os.getgid()


async def test_unknown_group_is_config_error(sock_path: str) -> None:
    """An unknown socket_group fails startup with a ConfigError."""
    from ctd.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown group"):
        await serve_control(sock_path, Recorder(), socket_group="no-such-group-ctd")


async def test_stale_socket_is_replaced(nursery: trio.Nursery, sock_path: str) -> None:
    """A leftover socket file nobody listens on is replaced."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    await start_server(nursery, sock_path)
    assert await call(sock_path, "echo", a=1) == {"args": {"a": 1}}


async def test_live_socket_is_not_replaced(nursery: trio.Nursery, sock_path: str) -> None:
    """A socket a live daemon answers on makes a second server fail clearly."""
    await start_server(nursery, sock_path)
    with pytest.raises(SocketInUseError, match="already listening"):
        await serve_control(sock_path, Recorder())
    assert await call(sock_path, "echo") == {"args": {}}


async def test_regular_file_is_not_replaced(sock_path: str) -> None:
    """A regular file at the socket path is left alone and reported."""
    await trio.Path(sock_path).write_text("keep me")
    with pytest.raises(SocketInUseError, match="not a socket"):
        await serve_control(sock_path, Recorder())
    assert await trio.Path(sock_path).read_text() == "keep me"


async def test_socket_removed_on_exit(sock_path: str) -> None:
    """Cancelling the server removes its socket file."""
    async with trio.open_nursery() as nursery:
        await start_server(nursery, sock_path)
        assert await trio.Path(sock_path).exists()
        nursery.cancel_scope.cancel()
    assert not await trio.Path(sock_path).exists()


async def test_plain_reply(nursery: trio.Nursery, sock_path: str) -> None:
    """A plain command's result comes back as one ok line with data."""
    await start_server(nursery, sock_path)
    lines = await trio.to_thread.run_sync(raw_exchange, sock_path, b'{"v":1,"cmd":"echo","args":{"x":"y"}}\n')
    assert [msgspec.json.decode(line) for line in lines] == [{"v": 1, "ok": True, "data": {"args": {"x": "y"}}}]


async def test_struct_data_is_encoded(nursery: trio.Nursery, sock_path: str) -> None:
    """A msgspec Struct returned by the dispatcher is sent as a JSON object."""
    await start_server(nursery, sock_path)
    data = await call(sock_path, "peer")
    assert set(data) == {"pid", "uid", "gid", "groups"}


async def test_peer_uid_is_ours(nursery: trio.Nursery, sock_path: str) -> None:
    """The dispatcher sees the connecting process's uid and pid via SO_PEERCRED."""
    rec = await start_server(nursery, sock_path)
    await call(sock_path, "echo")
    _, peer = rec.requests[0]
    assert (peer.uid, peer.pid) == (os.getuid(), os.getpid())


async def test_stream_10k_items(nursery: trio.Nursery, sock_path: str) -> None:
    """A streaming reply of 10,000 items arrives whole and in order."""
    await start_server(nursery, sock_path)
    items = await trio.to_thread.run_sync(lambda: list(ControlClient(sock_path).stream("count", n=10_000)))
    assert items == [{"i": i} for i in range(10_000)]


async def test_stream_end_line_carries_count(nursery: trio.Nursery, sock_path: str) -> None:
    """A stream ends with an ok/end line whose count is the number of items."""
    await start_server(nursery, sock_path)
    lines = await trio.to_thread.run_sync(raw_exchange, sock_path, b'{"v":1,"cmd":"count","args":{"n":3}}\n')
    assert msgspec.json.decode(lines[-1]) == {"v": 1, "ok": True, "end": True, "count": 3}
    assert msgspec.json.decode(lines[0]) == {"v": 1, "item": {"i": 0}}


async def test_stream_error_midway(nursery: trio.Nursery, sock_path: str) -> None:
    """An iterator that raises midway ends the stream with an error line."""
    await start_server(nursery, sock_path)

    def consume() -> tuple[list[Any], DaemonError]:
        got: list[Any] = []
        with pytest.raises(DaemonError) as info:
            for item in ControlClient(sock_path).stream("fail_midway"):
                got.append(item)
        return got, info.value

    got, exc = await trio.to_thread.run_sync(consume)
    assert got == [1, 2]
    assert (exc.code, exc.message) == ("error", "store went away")


async def test_malformed_json_then_next_connection(nursery: trio.Nursery, sock_path: str) -> None:
    """Malformed JSON gets a bad_request reply and the server serves the next client."""
    await start_server(nursery, sock_path)
    lines = await trio.to_thread.run_sync(raw_exchange, sock_path, b"{not json\n")
    reply = msgspec.json.decode(lines[0])
    assert (reply["ok"], reply["code"]) == (False, "bad_request")
    assert await call(sock_path, "echo") == {"args": {}}


async def test_oversize_line_then_next_connection(nursery: trio.Nursery, sock_path: str) -> None:
    """A request line over 64 KiB gets a bad_request reply and the server keeps serving."""
    await start_server(nursery, sock_path)
    payload = b'{"v":1,"cmd":"echo","args":{"x":"' + b"a" * MAX_REQUEST_LINE + b'"}}\n'
    lines = await trio.to_thread.run_sync(partial(raw_exchange, sock_path, payload, shut_write=False))
    reply = msgspec.json.decode(lines[0])
    assert reply["code"] == "bad_request"
    assert "longer than" in reply["error"]
    assert await call(sock_path, "echo") == {"args": {}}


async def test_wrong_version_is_bad_request(nursery: trio.Nursery, sock_path: str) -> None:
    """A request with another protocol version is refused as bad_request."""
    await start_server(nursery, sock_path)
    lines = await trio.to_thread.run_sync(raw_exchange, sock_path, b'{"v":2,"cmd":"echo"}\n')
    assert msgspec.json.decode(lines[0])["code"] == "bad_request"


@pytest.mark.parametrize(
    ("cmd", "code", "message"),
    [
        ("nope", "bad_request", "unknown command 'nope'"),
        ("denied", "denied", "uid 1234 may not run denied"),
        ("ctd_error", "error", "no source named 'x'"),
        ("boom", "internal", "internal error: RuntimeError: kaboom"),
    ],
)
async def test_error_codes(nursery: trio.Nursery, sock_path: str, cmd: str, code: str, message: str) -> None:
    """Each class of dispatcher error maps to its error code and message."""
    await start_server(nursery, sock_path)
    with pytest.raises(DaemonError) as info:
        await call(sock_path, cmd)
    assert (info.value.code, info.value.message) == (code, message)


async def test_internal_error_is_logged(nursery: trio.Nursery, sock_path: str) -> None:
    """An unexpected exception in the dispatcher is logged with the command."""
    await start_server(nursery, sock_path)
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(DaemonError):
            await call(sock_path, "boom")
    assert any(e["event"] == "control_internal_error" and e["cmd"] == "boom" for e in logs)


async def test_command_is_audited(nursery: trio.Nursery, sock_path: str) -> None:
    """Every control command is logged with the peer uid and its outcome."""
    await start_server(nursery, sock_path)
    with structlog.testing.capture_logs() as logs:
        await call(sock_path, "echo")
    [event] = [e for e in logs if e.get("ctd_event") == "control_command"]
    assert (event["cmd"], event["ctd_peer_uid"], event["outcome"], event["allowed"]) == (
        "echo",
        os.getuid(),
        "ok",
        True,
    )


async def test_silent_client_does_not_block_others(nursery: trio.Nursery, sock_path: str) -> None:
    """A client that connects and sends nothing does not delay another client."""
    await start_server(nursery, sock_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(sock_path)
        with trio.fail_after(5):
            assert await call(sock_path, "echo") == {"args": {}}


async def test_silent_client_times_out(nursery: trio.Nursery, sock_path: str) -> None:
    """A client that sends nothing is answered bad_request and dropped after the timeout."""
    await start_server(nursery, sock_path, request_timeout=0.2)

    def idle() -> list[bytes]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(sock_path)
            with s.makefile("rb") as f:
                return f.readlines()

    lines = await trio.to_thread.run_sync(idle)
    assert msgspec.json.decode(lines[0])["code"] == "bad_request"


async def test_client_gone_midstream(nursery: trio.Nursery, sock_path: str) -> None:
    """A client leaving mid-stream closes the iterator and the server keeps serving."""
    rec = await start_server(nursery, sock_path)

    stream = ControlClient(sock_path).stream("forever")
    first = await trio.to_thread.run_sync(lambda: next(stream))
    assert first == {"pad": "x" * 1000}
    stream.close()
    with trio.fail_after(5):
        await rec.stream_closed.wait()
    assert await call(sock_path, "echo") == {"args": {}}


async def test_stalled_reader_is_dropped(nursery: trio.Nursery, sock_path: str) -> None:
    """A client that stops reading a stream is dropped after the send timeout."""
    rec = await start_server(nursery, sock_path, send_timeout=0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        s.sendall(b'{"v":1,"cmd":"forever"}\n')
        with trio.fail_after(10):
            await rec.stream_closed.wait()
        assert await call(sock_path, "echo") == {"args": {}}
