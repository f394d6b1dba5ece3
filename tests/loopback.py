"""Real HTTP servers on loopback addresses that record every request they receive.

Used as "another origin" in the redirect and TAXII pinning tests: a server on
127.0.0.2 stands for a host the operator never configured, and the tests
assert that no secret ever arrives there (headers and body are recorded as
received on the socket, before any parsing).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    """One request as it arrived: method, target, headers (in order) and body."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        """Everything received, as one string to search for secrets."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.target}\n{head}\n\n{self.body.decode('latin-1')}"


Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[Received], Reply]


@dataclass
class Server:
    base: str  # http://HOST:PORT (the origin)
    received: list[Received] = field(default_factory=list)

    def everything(self) -> str:
        return "\n".join(r.text() for r in self.received)


def _not_found(req: Received) -> Reply:
    return 404, {"Content-Type": "text/plain"}, b"not here\n"


@contextmanager
def serve(host: str = "127.0.0.1", handler: Handler = _not_found) -> Iterator[Server]:
    """Serve ``handler`` on ``host`` (a free port); yields the Server with its record of requests."""
    lock = threading.Lock()
    server_ref: dict[str, Server] = {}

    class Handle(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Received(self.command, self.path, list(self.headers.items()), body)
            with lock:
                server_ref["s"].received.append(req)
            status, headers, payload = handler(req)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading early (a body it refused): not a server fault

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((host, 0), Handle)
    server_ref["s"] = Server(f"http://{host}:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_ref["s"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def redirect_to(location: str, status: int = 302) -> Handler:
    """A handler that answers every request with a redirect to ``location`` (+ the request path)."""

    def handle(req: Received) -> Reply:
        return status, {"Location": location}, b""

    return handle


def ok(body: bytes, content_type: str = "text/plain") -> Handler:
    """A handler that answers every request with 200 and ``body``."""

    def handle(req: Received) -> Reply:
        return 200, {"Content-Type": content_type}, body

    return handle
