"""A JSON gzip bomb served over loopback, and the peak RSS of the daemon pulling it.

Shared by tests/test_feed_json.py and bench/json_feed.py. The bomb is made in
a streaming way (a compressor fed 1 MiB blocks): the test never holds the
inflated document, only its ~1/1000 gzip.
"""

from __future__ import annotations

import http.server
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def gzip_repeat(size: int, head: bytes, item: bytes, tail: bytes) -> bytes:
    """gzip of a document of exactly ``size`` bytes: ``head``, spaces, ``item`` repeated, ``tail``."""
    count, spare = divmod(size - len(head) - len(tail), len(item))
    per_block = max(1, (1 << 20) // len(item))
    block = item * per_block
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(head + b" " * spare)]
    while count:
        n = min(count, per_block)
        out.append(z.compress(block if n == per_block else item * n))
        count -= n
    out.append(z.compress(tail))
    out.append(z.flush())
    return b"".join(out)


def json_bomb(size: int, first: str, filler: str, last: str) -> bytes:
    """gzip of a JSON array of exactly ``size`` bytes: ``first``, then ``filler`` repeated, then ``last``."""
    return gzip_repeat(size, f'["{first}",'.encode(), f'"{filler}",'.encode(), f'"{last}"]'.encode())


@contextmanager
def serve_gzip(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` (file name -> gzip body) with Content-Encoding: gzip at any directory; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = files.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. max_bytes)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def watch(pid: int, done: Callable[[], Any], limit: int, timeout: float) -> tuple[Any, int]:
    """Poll until ``done()`` is truthy; returns (its value, peak RSS). Stops early, returning
    (None, peak), once the peak passes ``limit``: a leaking daemon is not left to eat the machine."""
    deadline = time.monotonic() + timeout
    while True:
        peak = vm_hwm(pid)
        if peak > limit:
            return None, peak
        if result := done():
            return result, vm_hwm(pid)
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s (peak RSS {peak >> 20} MiB)")
        time.sleep(0.02)
