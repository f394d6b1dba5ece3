"""Run the OASIS reference TAXII 2.1 server (medallion, memory backend) for tests.

The server runs as a subprocess on 127.0.0.1 with a free port, from a JSON
config and a seed data file written here: one API root with the collections
the caller describes, users for HTTP Basic, a small ``max_page_size`` so
pagination takes several pages, and a long ``session_timeout`` so a slow step
cannot expire a pagination session (``next``) under a test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.daemonproc import stop_process, wait_for

MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
USER, PASSWORD = "ctd", "ctd-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Coll:
    """A seeded collection: ``objects`` are (STIX object, date_added) pairs."""

    id: str
    title: str
    can_read: bool = True
    can_write: bool = False
    objects: list[tuple[dict, str]] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": f"test collection {self.title}",
            "can_read": self.can_read,
            "can_write": self.can_write,
            "media_types": [STIX_MEDIA_TYPE],
            "objects": [o for o, _ in self.objects],
            "manifest": [
                {
                    "id": o["id"],
                    "date_added": added,
                    "version": o.get("modified", o.get("created")),
                    "media_type": STIX_MEDIA_TYPE,
                }
                for o, added in self.objects
            ],
        }


@dataclass
class Medallion:
    base: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def discovery(self) -> str:
        return f"{self.base}/taxii2/"

    def api_root(self, name: str = "api1") -> str:
        return f"{self.base}/{name}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _api_root(title: str, max_content_length: int, collections: list[Coll]) -> dict[str, Any]:
    return {
        "information": {
            "title": title,
            "description": "ctd tests",
            "versions": [MEDIA_TYPE],
            "max_content_length": max_content_length,
        },
        "status": [],
        "collections": [c.resource() for c in collections],
    }


@contextmanager
def medallion(
    workdir: Path, roots: dict[str, tuple[int, list[Coll]]], *, max_page_size: int = 5, startup_timeout: float = 20.0
) -> Iterator[Medallion]:
    """Start medallion with ``roots`` (name -> (max_content_length, collections)); stop it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data: dict[str, Any] = {
        "/discovery": {
            "title": "ctd test TAXII server",
            "description": "medallion for ctd tests",
            "contact": "tests",
            "default": f"{base}/{next(iter(roots))}/",
            "api_roots": [f"{base}/{name}/" for name in roots],
        },
    }
    for name, (max_len, colls) in roots.items():
        data[name] = _api_root(name, max_len, colls)
    data_path = workdir / "medallion-data.json"
    data_path.write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(data_path),
            "session_timeout": 3600,
            "check_interval": 3600,
        },
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": max_page_size},
    }
    config_path = workdir / "medallion.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "medallion.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medallion.scripts.run",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "WARN",
                str(config_path),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    server = Medallion(base, proc, log_path)
    try:
        _wait_ready(server, startup_timeout)
        yield server
    finally:
        stop_process(proc)


def _wait_ready(server: Medallion, timeout: float) -> None:
    def answers() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"medallion exited with {server.proc.returncode}:\n{server.log()}")
        try:
            r = httpx.get(
                server.discovery, auth=(USER, PASSWORD), headers={"Accept": MEDIA_TYPE}, timeout=2, trust_env=False
            )
        except httpx.TransportError:
            return False
        return r.status_code == 200

    wait_for(answers, lambda: f"medallion to answer:\n{server.log()}", timeout)
