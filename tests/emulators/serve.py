"""Serve any emulator over real HTTP on loopback, in-process or as ``python -m tests.emulators.NAME``.

An emulator is an object answering ``httpx.Request -> httpx.Response``: either a
synchronous ``handle(request)`` method or an async callable (``__call__`` or
``handler``). Async handlers run in a fresh ``trio.run`` per request with a
monotonic clock, so ``trio.current_time()`` (used for token expiry) means the
same thing from one request to the next. Requests are answered one at a time:
the emulators' state is not thread-safe and need not be.

Standalone use: ``python -m tests.emulators.NAME --port N [--host 127.0.0.1]``
prints one JSON line ``{"emulator", "base_url", "credentials"}`` on stdout and
serves until SIGINT or SIGTERM. Only loopback addresses are accepted.

With ``--control``, ``POST /_emulator/METHOD`` (JSON ``{"args": [...], "kwargs": {...}}``)
calls one of the test helpers the emulator lists in ``CONTROL`` (add a detection,
read what ctd wrote) and answers ``{"result": ...}``: how an end-to-end test drives
an emulator running in another process. Without the flag that path is the vendor's 404.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import inspect
import ipaddress
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import httpx
import trio
import trio.abc

MAX_BODY = 16 * 1024 * 1024  # a client sending more is broken or hostile


class MonotonicClock(trio.abc.Clock):
    """trio clock reading ``time.monotonic()``: the same timeline across separate ``trio.run`` calls."""

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())


def answer(emulator: Any, request: httpx.Request) -> httpx.Response:
    """One request through ``emulator`` (sync ``handle`` preferred, else its async handler)."""
    handle = getattr(emulator, "handle", None)
    if callable(handle) and not inspect.iscoroutinefunction(handle):
        return handle(request)
    fn = getattr(emulator, "handler", None) or emulator
    return trio.run(fn, request, clock=MonotonicClock())


CONTROL_PREFIX = "/_emulator/"


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def control(emulator: Any, request: httpx.Request) -> httpx.Response:
    """Call the test helper a ``/_emulator/METHOD`` request names, if the emulator lists it in ``CONTROL``."""
    name = request.url.path[len(CONTROL_PREFIX) :]
    if request.method != "POST" or name not in getattr(emulator, "CONTROL", ()):
        return httpx.Response(404, json={"error": f"no control method {name!r}"})
    try:
        body = json.loads(request.content or b"{}")
        result = getattr(emulator, name)(*body.get("args", []), **body.get("kwargs", {}))
        return httpx.Response(200, content=json.dumps({"result": result}, default=_jsonable).encode())
    except (ValueError, TypeError, KeyError) as exc:
        return httpx.Response(400, json={"error": f"{type(exc).__name__}: {exc}"})


def _handler_class(
    emulator: Any, lock: threading.Lock, controls: bool = False
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes: with Nagle and the client's delayed ACK
        # every keep-alive reply would wait ~40 ms (a 14-day alert iterator: 30 s).
        disable_nagle_algorithm = True

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("host") or "127.0.0.1"
            req = httpx.Request(
                self.command, f"http://{host}{self.path}", headers=list(self.headers.items()), content=body
            )
            with lock:
                if controls and req.url.path.startswith(CONTROL_PREFIX):
                    resp = control(emulator, req)
                else:
                    resp = answer(emulator, req)
            raw = b"".join(cast(Iterable[bytes], resp.stream))  # as built: a gzip body stays gzip-encoded
            self.send_response(resp.status_code)
            for k, v in resp.headers.multi_items():
                if k.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address; emulators never listen anywhere else."""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{host!r} is not a loopback address (use 127.0.0.0/8 or ::1)")
    return host


def make_server(
    emulator: Any, host: str = "127.0.0.1", port: int = 0, *, controls: bool = False
) -> http.server.ThreadingHTTPServer:
    check_loopback(host)
    cls: type[http.server.ThreadingHTTPServer] = http.server.ThreadingHTTPServer
    if ":" in host:
        cls = type("ThreadingHTTPServer6", (cls,), {"address_family": __import__("socket").AF_INET6})
    server = cls((host, port), _handler_class(emulator, threading.Lock(), controls))
    server.daemon_threads = True
    return server


def base_url(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def serve_on_localhost(emulator: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``emulator`` on a free loopback port in a background thread; yields the base URL."""
    server = make_server(emulator, host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Options(argparse.Namespace):
    host: str
    port: int
    rate_limit: int | None
    page_size: int | None
    seed: int
    control: bool


def parse_args(name: str, argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog=f"python -m tests.emulators.{name}",
        description=f"Serve the {name} emulator on loopback until SIGINT/SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    p.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="requests answered before the vendor's 429 (default: the vendor's documented limit)",
    )
    p.add_argument("--page-size", type=int, default=None, help="items per page where the emulator pages")
    p.add_argument("--seed", type=int, default=5, help="demo records to load so reads return something")
    p.add_argument(
        "--control",
        action="store_true",
        help="answer POST /_emulator/METHOD (the emulator's CONTROL helpers) so a test can drive it",
    )
    return p.parse_args(argv, namespace=Options())


def main(name: str, build: Callable[[Options], tuple[Any, dict[str, Any]]], argv: list[str] | None = None) -> int:
    """Build the emulator from the options, print where it listens, serve until SIGINT/SIGTERM."""
    opts = parse_args(name, argv)
    try:
        check_loopback(opts.host)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emulator, credentials = build(opts)
    # Block the stop signals before the serving thread starts (it inherits the
    # mask), so only this thread receives them, in sigwait.
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    server = make_server(emulator, opts.host, opts.port, controls=opts.control)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(json.dumps({"emulator": name, "base_url": base_url(server), "credentials": credentials}), flush=True)
    signal.sigwait(stops)
    server.shutdown()
    server.server_close()
    thread.join()
    return 0
