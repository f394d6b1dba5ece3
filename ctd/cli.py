"""``ctd`` command line: run the daemon, check a config."""

from __future__ import annotations

import argparse
import sys

import structlog
import trio

from ctd import __version__, exits
from ctd.config import default_config_path, load_config, summary
from ctd.errors import ConfigError, CtdError
from ctd.service import logs as logs

log = structlog.get_logger("ctd")


GIL_SWITCH_INTERVAL = 0.0005


def tune_runtime() -> None:
    """Hand the GIL over more often than CPython's default 5 ms.

    The store's thread releases the GIL for every SQLite statement; while a
    source actor parses in another thread, taking it back could wait a whole
    switch interval each time. Measured with bench/ingest.py: the store ran at
    half speed with the default, at nearly full speed with 0.5 ms.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def build_parser() -> argparse.ArgumentParser:
    """The ctd argument parser (also read by the docs test and the completion/man tooling)."""
    p = argparse.ArgumentParser(
        prog="ctd",
        description="ctd, a threat-exchange daemon: it pulls Indicators of Compromise from sources, keeps them "
        "in one deduplicated store, and shares what business rules select with destinations.",
    )
    p.add_argument("--version", action="version", version=f"ctd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument(
        "--config", metavar="PATH", default=None, help="config file (default $CTD_CONFIG or /etc/ctd/ctd.toml)"
    )
    run.add_argument("--once", action="store_true", help="pull every source once, print a summary and exit")
    chk = sub.add_parser("check-config", help="validate a config file and exit (0 valid, 2 invalid)")
    chk.add_argument("path", nargs="?", default=None, help="config file (default $CTD_CONFIG or /etc/ctd/ctd.toml)")
    chk.add_argument(
        "--deep",
        action="store_true",
        help="also check what `ctd run` needs: state_dir, its lock, the database's header and schema, "
        "the control socket and the groups (exits with the status `ctd run` would)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        path = args.path or default_config_path()
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        print(summary(cfg))
        if args.deep:
            from ctd.daemon.checks import deep_checks, report

            text, code = report(deep_checks(cfg))
            print(text)
            return code
        return 0
    path = args.config or default_config_path()
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"ctd: invalid config {path}: {exc}", file=sys.stderr)
        return 2
    logs.configure_logging(cfg.daemon.log_level)
    tune_runtime()
    from ctd.daemon.startup import startup_error

    try:
        if args.once:
            from ctd.daemon.once import run_once

            return trio.run(run_once, cfg)
        from ctd.control.access import AccessPolicy
        from ctd.control.commands import Commands
        from ctd.daemon.daemon import Daemon

        # The CLI wires the command handlers to the daemon: neither imports the other.
        daemon = Daemon(cfg)
        commands = Commands(daemon, AccessPolicy(cfg.daemon.socket_group, cfg.daemon.admin_group))
        trio.run(daemon.run, commands.dispatch, commands.is_read)
    except Exception as exc:
        # What ends a start has one line for the operator and its own exit status (ctd.exits);
        # anything else is a bug and keeps its traceback.
        err = startup_error(exc, cfg.daemon.state_dir, cfg.daemon.socket)
        if err is None:
            if isinstance(exc, CtdError):
                log.error("daemon failed", error=str(exc))
                return exits.FAILURE
            raise
        print(f"ctd: {err}", file=sys.stderr)
        return err.exit_code
    return exits.OK
