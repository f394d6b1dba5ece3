"""Run the real daemon as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ctd.ctdctl.main import main as ctdctl_main

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def wait_for(pred: Callable[[], T | None], what: str | Callable[[], str] = "condition", timeout: float = 30.0) -> T:
    """Poll ``pred`` until it returns something truthy and return that; AssertionError after ``timeout`` s.

    The one way tests watch a real process (the daemon, journald, a peer server) from outside;
    in-process tests wait on events instead. ``pred`` may raise to fail at once (the process died);
    ``what`` may be a function, to describe the failure with what is known by then (the log).
    """
    deadline = time.monotonic() + timeout
    while True:
        if value := pred():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, wait, then SIGKILL if it does not go; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def short_tmpdir() -> Path:
    """A temp dir short enough for a Unix socket path."""
    return Path(tempfile.mkdtemp(prefix="ctd", dir="/tmp"))


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "CTD_SOCKET", "CTD_CONFIG"):
        e.pop(k, None)
    e.update(extra)
    return e


class DaemonProc:
    def __init__(self, workdir: Path, config_text: str, **env_extra: str) -> None:
        self.dir = workdir
        self.config = workdir / "ctd.toml"
        self.socket = workdir / "ctd.sock"
        self.log = workdir / "daemon.log"
        self.write_config(config_text)
        self._env = env(**env_extra)
        self.proc: subprocess.Popen | None = None

    def write_config(self, text: str) -> None:
        head = f'[daemon]\nstate_dir = "{self.dir}/var"\nsocket = "{self.dir}/ctd.sock"\n'
        if "[daemon]" in text:
            head = ""
        self.config.write_text(head + text)

    def start(self, *args: str) -> DaemonProc:
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctd", "run", "--config", str(self.config), *args],
            cwd=self.dir,
            env=self._env,
            stdout=self._logf,
            stderr=self._logf,
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early ({self.proc.returncode}):\n{self.log.read_text()}")
            return self.socket.exists() and self.ctl_rc("status") == 0

        wait_for(ready, lambda: "the daemon to become ready:\n" + self.log.read_text(), timeout)

    def ctl_rc(self, *args: str) -> int:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return ctdctl_main(["--socket", str(self.socket), *args])

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ctd.ctdctl.main", "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            env=self._env,
            timeout=120,
        )

    def ctl_json(self, *args: str):
        import json

        r = self.ctl("--json", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        rc = stop_process(self.proc, timeout)
        self._logf.close()
        return rc

    def logs(self) -> list[dict]:
        import json

        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self._logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)
