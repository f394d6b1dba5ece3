"""Parsers that cannot be interrupted run in a child process, killed when their time is up.

feedparser and pypdf are pure Python and neither checks a deadline: a 1 MB
feed of nested elements keeps feedparser busy for seven seconds, a 400 KB PDF
page keeps pypdf busy for over ten, and a thread running them can be
abandoned but not stopped. ``run_child`` runs ``python -m MODULE`` with the
document on stdin and reads its JSON answer from stdout; when ``time_budget``
is spent the child is killed (``trio.run_process`` on cancellation). The
child (``child_main``) first limits its own CPU time and address space where
the system allows it (``setrlimit``: a systemd unit whose SystemCallFilter
denies ``@resources`` keeps only the kill) and logs nothing but its error.

Cost: about 0.3 s to start the interpreter, once per document.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import trio

CHILD_MEMORY = 1 << 30


class WorkerError(Exception):
    """The child could not do its work: what it said, or that it ran out of time."""


async def run_child(module: str, args: list[str], data: bytes, *, time_budget: float, max_reply: int) -> Any:
    """``python -m module CPU_SECONDS *args`` fed ``data``; its JSON reply (WorkerError if it fails)."""
    cmd = [sys.executable, "-m", module, str(int(time_budget) + 1), *args]
    with trio.move_on_after(time_budget) as scope:
        proc = await trio.run_process(
            cmd, stdin=data, capture_stdout=True, capture_stderr=True, check=False, deliver_cancel=_kill
        )
    if scope.cancelled_caught:
        raise WorkerError(f"took longer than {time_budget:g} s")
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise WorkerError(said[0][:200] if said else f"the reader died (exit {proc.returncode})")
    if len(proc.stdout) > max_reply:
        raise WorkerError("the reader answered too much")
    return json.loads(proc.stdout)


async def _kill(proc: trio.Process) -> None:
    proc.kill()


def _limit(cpu_seconds: int) -> None:
    for which, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, CHILD_MEMORY)):
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError):
            pass  # not allowed here: the parent's kill still holds


def child_main(work: Callable[[bytes, list[str]], Any], errors: tuple[type[BaseException], ...]) -> NoReturn:
    """The child's side: limits, the document from stdin, ``work``'s JSON answer on stdout; exit 2 on ``errors``."""
    logging.disable(logging.CRITICAL)  # parsers log every quirk of real-world input: stderr carries the error only
    cpu, *args = sys.argv[1:]
    _limit(int(cpu))
    data = sys.stdin.buffer.read()
    try:
        answer = work(data, args)
    except errors as exc:
        print(str(exc) or type(exc).__name__, file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("needs more memory than allowed", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    sys.exit(0)
