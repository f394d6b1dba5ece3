"""ctdctl: talk to a running ctd over its control socket.

Exit codes (docs/ctdctl.md has the table): 0 ok; 1 cannot reach the daemon;
2 usage error or the daemon reported an error (its message goes to stderr);
4 what the command names does not exist; 124 no answer within the command's
timeout (``ctd.ctdctl.timeouts``; ``--timeout`` overrides); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from ctd.control.protocol import CODE_NOT_FOUND
from ctd.ctdctl import admin as admin
from ctd.ctdctl import db as db
from ctd.ctdctl import render as render
from ctd.ctdctl import render_sharing as render_sharing
from ctd.ctdctl import render_sources as render_sources
from ctd.ctdctl import timeouts as timeouts
from ctd.ctdctl.client import (
    DEFAULT_SOCKET,
    CommandTimedOut,
    ConnectError,
    ControlClient,
    DaemonError,
    resolve_socket,
)
from ctd.ctdctl.completion import bash_completion
from ctd.ctdctl.escape import escape
from ctd.ctdctl.progress import SyncProgress

# One table for every command (docs/ctdctl.md "Exit codes"); 3 and 5-9 are left for more.
EXIT_OK = 0
EXIT_CONNECT = 1  # the daemon cannot be reached, or --config cannot be read
EXIT_DAEMON_ERROR = 2  # the daemon refused or failed the request; argparse's usage errors are 2 too
EXIT_NOT_FOUND = 4  # the value, source, rule, sharing or plugin named does not exist (as systemctl's 4)
EXIT_TIMEOUT = 124  # like timeout(1)
EXIT_INTERRUPTED = 130
EXIT_MEANINGS = {  # for the man page (ctd.manpages); docs/ctdctl.md says the same at length
    EXIT_OK: "success (also a search that matched nothing)",
    EXIT_CONNECT: "the daemon cannot be reached, or the config named by --config cannot be read",
    EXIT_DAEMON_ERROR: "a usage error (an unknown command, option or option value: the valid ones are listed), "
    "or the daemon refused or failed the request (denied, a rejected reload, a failed sync or plugins check)",
    EXIT_NOT_FOUND: "the value, source, rule, sharing configuration or plugin the command names does not exist",
    EXIT_TIMEOUT: "no answer within the command's timeout (--timeout SECONDS overrides it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


# --- command line -------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--json", action="store_true", default=default, help="print the raw data as JSON (streams: one object per line)"
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help=f"control socket (default: $CTD_SOCKET, the config's, or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--config", metavar="PATH", default=default, help="read [daemon].socket from this config (default: $CTD_CONFIG)"
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=timeouts.seconds,
        default=default,
        help="how long to wait for the daemon (default: per command, 30 s for reads, 1 h for sync; 0: no limit)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ctdctl argument parser."""
    # Global options are accepted before and after the subcommand: the copies on
    # the subparsers default to SUPPRESS so they never overwrite the main ones.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="ctdctl", description="Control a running ctd threat-exchange daemon.")
    _global_options(parser, None)
    parser.set_defaults(json=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("status", parents=[common], help="show daemon status, indicator counts and sources")
    src = sub.add_parser("sources", parents=[common], help="list configured sources, or show one with its rejections")
    srcsub = src.add_subparsers(dest="action", metavar="ACTION")
    srcsub.add_parser("list", parents=[common], help="list configured sources and their pull state (the default)")
    p = srcsub.add_parser("show", parents=[common], help="one source: state, counts and the records it rejected")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("sync", parents=[common], help="pull a source now and wait for the counts")
    p.add_argument("source", metavar="SOURCE")
    sub.add_parser("reload", parents=[common], help="re-read the config file and apply the changes")

    ind = sub.add_parser("indicators", parents=[common], help="show, search or export indicators")
    isub = ind.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = isub.add_parser("show", parents=[common], help="show one indicator with its sources")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--type", metavar="T")
    p = isub.add_parser("search", parents=[common], help="list indicators matching filters")
    p.add_argument("--type", metavar="T")
    p.add_argument("--source", metavar="S")
    _add_active_flags(p)
    p.add_argument("--limit", metavar="N", type=int, default=100, help="at most N rows (default 100)")
    p = isub.add_parser("export", parents=[common], help="stream indicators as JSON lines or CSV")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--type", metavar="T")
    p.add_argument("--source", metavar="S")
    _add_active_flags(p)
    admin.add_indicator_actions(isub, common)

    rules = sub.add_parser("rules", parents=[common], help="list sharing rules or dry-run one")
    rsub = rules.add_subparsers(dest="action", metavar="ACTION", required=True)
    rsub.add_parser("list", parents=[common], help="list rules, their exceptions, mutes and users")
    p = rsub.add_parser("test", parents=[common], help="dry run: what a rule would share now (nothing is sent)")
    p.add_argument("name", metavar="NAME")
    _add_days(p, "only IoCs seen in the last N days")
    admin.add_rules_actions(rsub, common)

    shr = sub.add_parser("sharing", parents=[common], help="list, inspect or run sharing configurations")
    ssub = shr.add_subparsers(dest="action", metavar="ACTION", required=True)
    ssub.add_parser("list", parents=[common], help="list sharing configurations with their ledger counts")
    p = ssub.add_parser("show", parents=[common], help="show one sharing configuration and its failed entries")
    p.add_argument("name", metavar="NAME")
    p = ssub.add_parser("sync", parents=[common], help="re-share now and wait for the counts")
    p.add_argument("name", metavar="NAME")
    _add_days(p, "re-share only IoCs seen in the last N days")

    admin.add_commands(sub, common)
    db.add_commands(sub, common)
    p = sub.add_parser("completion", help="print a shell completion script generated from these options")
    p.add_argument("shell", choices=("bash",), help="the shell (only bash)")
    return parser


def _add_days(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--days", metavar="N", type=int, default=None, help=help_text)


def _add_active_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--active", dest="active", action="store_const", const=True, default=None, help="only active indicators"
    )
    g.add_argument("--inactive", dest="active", action="store_const", const=False, help="only inactive indicators")


def main(argv: list[str] | None = None) -> int:
    """Run ctdctl with ``argv``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    socket = _Socket(args, err)
    try:
        if args.command == "completion":
            if args.json:  # a shell script has no JSON form: refused wherever --json stands
                parser.error("completion prints a shell script; --json does not apply to it")
            out.write(bash_completion(parser))
            return EXIT_OK

        # The socket is resolved on connecting: `version` prints the client's first.
        limit = timeouts.for_command(args)

        def connect() -> ControlClient:
            return ControlClient(socket.path(), timeout=limit)

        for run in (admin.run, db.run):
            code = run(args, connect, out)
            if code is not None:
                return code
        return _run(args, connect(), out, err)
    except CommandTimedOut as exc:
        _complain(err, str(exc))
        return EXIT_TIMEOUT
    except ConnectError as exc:
        socket.tell_notes()
        _complain(err, str(exc))
        return EXIT_CONNECT
    except DaemonError as exc:
        _complain(err, exc.message)
        return EXIT_NOT_FOUND if exc.code == CODE_NOT_FOUND else EXIT_DAEMON_ERROR
    except BrokenPipeError:  # `ctdctl ... | head`
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


class _Socket:
    """The socket path, resolved once; how it was found when the config does not parse goes to stderr.

    For ``reload`` that note is kept back unless the daemon cannot be reached: the
    daemon's own verdict on the file is the one line the operator needs.
    """

    def __init__(self, args: argparse.Namespace, err: TextIO) -> None:
        self._args, self._err = args, err
        self._path: str | None = None
        self._notes: list[str] = []

    def path(self) -> str:
        if self._path is None:
            self._path = resolve_socket(self._args.socket, self._args.config, notes=self._notes)
            if self._args.command != "reload":
                self.tell_notes()
        return self._path

    def tell_notes(self) -> None:
        for note in self._notes:
            _complain(self._err, note)
        self._notes.clear()


def _run(args: argparse.Namespace, client: ControlClient, out: TextIO, err: TextIO) -> int:
    as_json = args.json
    match args.command:
        case "status":
            data = client.call("status")
            _emit(out, data, as_json, render.status)
        case "sources" if getattr(args, "action", None) == "show":
            _emit(out, client.call("sources.show", name=args.name), as_json, render_sources.source_show)
        case "sources":
            data = client.call("sources")
            _emit(out, data, as_json, render.sources)
        case "sync":
            # A pull can take long: its progress is shown meanwhile.
            data = _sync_with_progress(args, client, err)
            _emit(out, data, as_json, render.sync)
            if data.get("error") is not None:
                _complain(err, f"sync {args.source} failed: {data['error']}")
                return EXIT_DAEMON_ERROR
        case "reload":
            data = client.call("reload")
            _emit(out, data, as_json, render.reload)
        case "indicators":
            return _run_indicators(args, client, out, err)
        case "rules":
            return _run_rules(args, client, out)
        case "sharing":
            return _run_sharing(args, client, out, err)
        case other:  # argparse only lets declared commands through
            raise AssertionError(f"unhandled command {other!r}")
    return EXIT_OK


def _run_indicators(args: argparse.Namespace, client: ControlClient, out: TextIO, err: TextIO) -> int:
    match args.action:
        case "show":
            data = client.call("indicators.show", value=args.value, type=args.type)
            _emit(out, data, args.json, render.indicators_show)
            if not data:
                _complain(err, f"no indicator {args.value}")
                return EXIT_NOT_FOUND
        case "search":
            data = client.call(
                "indicators.search", type=args.type, source=args.source, active=args.active, limit=args.limit
            )
            _emit(out, data, args.json, render.indicators_table)
            if not data and not args.json:
                _complain(err, "no matching indicators")
        case "export":
            items = client.stream("indicators.export", type=args.type, source=args.source, active=args.active)
            if args.json or args.format == "jsonl":
                render.write_jsonl(out, items)
            else:
                render.write_csv(out, items, terminal=_is_terminal(out))
        case other:
            raise AssertionError(f"unhandled indicators action {other!r}")
    return EXIT_OK


def _run_rules(args: argparse.Namespace, client: ControlClient, out: TextIO) -> int:
    match args.action:
        case "list":
            _emit(out, client.call("rules.list"), args.json, render_sharing.rules_list)
        case "test":
            # Warnings (limits exceeded) are part of the report, not a failure.
            data = client.call("rules.test", name=args.name, days=args.days)
            _emit(out, data, args.json, render_sharing.rules_test)
        case other:
            raise AssertionError(f"unhandled rules action {other!r}")
    return EXIT_OK


def _run_sharing(args: argparse.Namespace, client: ControlClient, out: TextIO, err: TextIO) -> int:
    match args.action:
        case "list":
            _emit(out, client.call("sharing.list"), args.json, render_sharing.sharing_list)
        case "show":
            _emit(out, client.call("sharing.show", name=args.name), args.json, render_sharing.sharing_show)
        case "sync":
            data = client.call("sharing.sync", name=args.name, days=args.days)
            _emit(out, data, args.json, render_sharing.sharing_sync)
            if data.get("deferred"):
                # The destination is in backoff: the daemon answered at once and sends nothing before then.
                _complain(
                    err,
                    f"sharing sync {args.name}: not run, the destination is in backoff after: {data.get('error')}; "
                    f"next attempt at {data.get('next_attempt')}",
                )
                return EXIT_DAEMON_ERROR
            if data.get("error") is not None:
                _complain(err, f"sharing sync {args.name} failed: {data['error']}")
                return EXIT_DAEMON_ERROR
        case other:
            raise AssertionError(f"unhandled sharing action {other!r}")
    return EXIT_OK


def _sync_with_progress(args: argparse.Namespace, syncing: ControlClient, err: TextIO) -> Any:
    if args.json:
        return syncing.call("sync", source=args.source)
    poll = ControlClient(syncing.path, timeout=10.0)
    shown = SyncProgress(args.source, lambda: poll.call("sources", counts=False), err, _is_terminal(err))
    try:
        return syncing.call_ticking("sync", shown.tick, shown.interval, source=args.source)
    finally:
        shown.done()


_emit = render.emit


def _complain(err: TextIO, message: str) -> None:
    """One line on stderr; the message (often the daemon's or a source's words) escaped."""
    print(f"ctdctl: {escape(message)}", file=err)


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
