"""ctdctl: talk to a running ctd over its control socket.

Exit codes: 0 ok; 1 cannot reach the daemon, or nothing found; 2 the daemon
reported an error (its message goes to stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from ctd.ctdctl import admin as admin
from ctd.ctdctl import render as render
from ctd.ctdctl import render_sharing as render_sharing
from ctd.ctdctl import render_sources as render_sources
from ctd.ctdctl.client import DEFAULT_SOCKET, ConnectError, ControlClient, DaemonError, resolve_socket
from ctd.ctdctl.completion import bash_completion
from ctd.ctdctl.escape import escape

EXIT_OK, EXIT_NOT_FOUND, EXIT_DAEMON_ERROR = 0, 1, 2
EXIT_CONNECT = 1


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
    try:
        if args.command == "completion":
            out.write(bash_completion(parser))
            return EXIT_OK
        # The socket is resolved on connecting: `version` prints the client's first.
        code = admin.run(args, lambda **kw: ControlClient(resolve_socket(args.socket, args.config), **kw), out)
        if code is not None:
            return code
        path = resolve_socket(args.socket, args.config)
        return _run(args, path, out, err)
    except ConnectError as exc:
        _complain(err, str(exc))
        return EXIT_CONNECT
    except DaemonError as exc:
        _complain(err, exc.message)
        return EXIT_DAEMON_ERROR
    except BrokenPipeError:  # `ctdctl ... | head`
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, path: str, out: TextIO, err: TextIO) -> int:
    client = ControlClient(path)
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
            # A pull can take long: the daemon decides when it is over.
            data = ControlClient(path, timeout=None).call("sync", source=args.source)
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
            return _run_sharing(args, client, path, out, err)
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
            items = client.stream("indicators.export", type=args.type, active=args.active)
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


def _run_sharing(args: argparse.Namespace, client: ControlClient, path: str, out: TextIO, err: TextIO) -> int:
    match args.action:
        case "list":
            _emit(out, client.call("sharing.list"), args.json, render_sharing.sharing_list)
        case "show":
            _emit(out, client.call("sharing.show", name=args.name), args.json, render_sharing.sharing_show)
        case "sync":
            # A pass can take long (slow destination): the daemon decides when it is over.
            data = ControlClient(path, timeout=None).call("sharing.sync", name=args.name, days=args.days)
            _emit(out, data, args.json, render_sharing.sharing_sync)
            if data.get("error") is not None:
                _complain(err, f"sharing sync {args.name} failed: {data['error']}")
                return EXIT_DAEMON_ERROR
        case other:
            raise AssertionError(f"unhandled sharing action {other!r}")
    return EXIT_OK


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
