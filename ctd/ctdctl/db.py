"""``ctdctl db``: an online backup of the database, and an integrity check (arguments, dispatch, output)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from ctd.ctdctl.render import cell, emit, kv

EXIT_OK, EXIT_FAILED = 0, 2


class Client(Protocol):
    def call(self, cmd: str, /, **args: Any) -> Any: ...


Connect = Callable[..., Client]


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", parents=[common], help="back up the database online, or check its integrity")
    dsub = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "backup",
        parents=[common],
        help="copy the database while ctd runs (default: a new file in state_dir/backups)",
    )
    p.add_argument("path", metavar="PATH", nargs="?", default=None, help="where the daemon writes the copy")
    p.add_argument(
        "--keep", metavar="N", type=int, default=None, help="then keep only the N newest in state_dir/backups"
    )
    dsub.add_parser("check", parents=[common], help="SQLite's integrity check of the whole database (reads all of it)")


def run(args: argparse.Namespace, connect: Connect, out: TextIO) -> int | None:
    """Run a ``db`` command and return its exit code; ``None`` if ``args`` is another command."""
    if args.command != "db":
        return None
    client = connect()
    if args.action == "backup":
        # The daemon writes the file: a relative path means the one from where ctdctl was run.
        path = os.path.abspath(args.path) if args.path is not None else None
        emit(out, client.call("db.backup", path=path, keep=args.keep), args.json, backup)
        return EXIT_OK
    data = client.call("db.check")
    emit(out, data, args.json, check)
    return EXIT_OK if data.get("ok") else EXIT_FAILED


def backup(out: TextIO, data: dict[str, Any]) -> None:
    kv(
        out,
        [
            ("backup", data.get("path")),
            ("bytes", data.get("bytes")),
            ("indicators", data.get("indicators")),
            ("ledger rows", data.get("ledger_rows")),
            ("schema", data.get("schema")),
            ("seconds", data.get("seconds")),
        ],
    )
    for path in data.get("removed") or []:
        out.write(f"removed {cell(path)}\n")


def check(out: TextIO, data: dict[str, Any]) -> None:
    if data.get("ok"):
        out.write(f"ok: {cell(data.get('path'))} passed the integrity check ({data.get('seconds')} s)\n")
        return
    out.write(f"DAMAGED: {cell(data.get('path'))}; restore a backup (docs/operations.md, Restore)\n")
    for problem in data.get("problems") or []:
        out.write(f"  {cell(problem)}\n")
