"""Vendor emulators as separate processes, for end-to-end tests (``python -m tests.emulators.NAME --control``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


class Emulator:
    """A vendor emulator running as its own process, driven over its control endpoint."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"tests.emulators.{name}", "--port", "0", "--control", "--seed", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.base = ""
        self.creds: dict[str, Any] = {}

    def started(self) -> Emulator:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"emulator {self.name} did not start")
        info = json.loads(line)
        self.base, self.creds = info["base_url"], info["credentials"]
        return self

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        resp = httpx.post(f"{self.base}/_emulator/{method}", json={"args": args, "kwargs": kwargs}, trust_env=False)
        resp.raise_for_status()
        return resp.json()["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``pred`` until it is truthy (bounded; the daemon shares asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        if value := pred():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
