"""ctdctl: talk to a running ctd over its control socket.

Exit codes: 0 ok; 1 cannot reach the daemon, or nothing found; 2 the daemon
reported an error (its message goes to stderr).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import tomllib
from collections.abc import Iterator
from typing import Any, Final, TextIO

import msgspec

from ctd.control.protocol import Reply, decode_reply, encode_request
from ctd.ctdctl import admin as admin
from ctd.ctdctl import render as render
from ctd.ctdctl.completion import bash_completion
from ctd.ctdctl.escape import escape
from ctd.errors import CtdError

DEFAULT_SOCKET: Final = "/run/ctd/ctd.sock"
DEFAULT_TIMEOUT: Final = 120.0  # seconds per socket operation
EXIT_OK, EXIT_NOT_FOUND, EXIT_DAEMON_ERROR = 0, 1, 2
EXIT_CONNECT = 1

_HINTS: Final = {
    errno.ENOENT: "is the daemon running? is this the right socket? use --socket or $CTD_SOCKET",
    errno.ECONNREFUSED: "is the daemon running? is this the right socket? use --socket or $CTD_SOCKET",
    errno.EACCES: "are you in the socket's group? (or use sudo; --socket or $CTD_SOCKET picks another socket)",
}


class ConnectError(CtdError):
    """The daemon cannot be reached (the message carries a one-line hint)."""


class DaemonError(CtdError):
    """The daemon answered with an error reply."""

    def __init__(self, message: str, code: str) -> None:
        self.message = message
        self.code = code
        super().__init__(message)


class ControlClient:
    """Synchronous client: one connection per request.

    Args:
      path: the control socket.
      timeout: seconds each socket operation may take; ``None`` waits forever.
    """

    def __init__(self, path: str, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, /, **args: Any) -> Any:
        """Run a plain command and return its data; raise ``DaemonError`` on an error reply."""
        with self._open(cmd, args) as lines:
            reply = self._next_reply(lines)
            if reply.ok is True and reply.data is not msgspec.UNSET:
                return reply.data
            raise self._error(reply)

    def stream(self, cmd: str, /, **args: Any) -> Iterator[Any]:
        """Run a streaming command and yield its items as they arrive."""
        with self._open(cmd, args) as lines:
            while True:
                reply = self._next_reply(lines)
                if reply.item is not msgspec.UNSET:
                    yield reply.item
                elif reply.ok is True and reply.end:
                    return
                else:
                    raise self._error(reply)

    # -- internals -------------------------------------------------------------

    def _open(self, cmd: str, args: dict[str, Any]) -> Any:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise self._connect_error(exc) from exc
        try:
            sock.sendall(encode_request(cmd, args))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused (busy) before the daemon read the request: its answer is still there to read
        except OSError as exc:
            sock.close()
            raise ConnectError(f"lost connection to {self.path}: {exc.strerror or exc}") from exc
        return _Lines(sock)

    def _next_reply(self, lines: _Lines) -> Reply:
        line = self._next_line(lines)
        try:
            return decode_reply(line)
        except ValueError as exc:
            raise DaemonError(str(exc), "protocol") from exc

    def _next_line(self, lines: _Lines) -> bytes:
        try:
            line = lines.readline()
        except TimeoutError as exc:
            raise ConnectError(f"timed out waiting for the daemon on {self.path}") from exc
        except OSError as exc:
            raise ConnectError(f"lost connection to {self.path}: {exc.strerror or exc}") from exc
        if not line.endswith(b"\n"):
            raise ConnectError(f"the daemon closed the connection on {self.path} before replying")
        return line

    def _connect_error(self, exc: OSError) -> ConnectError:
        reason = exc.strerror or str(exc)
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        hint = _HINTS.get(exc.errno or 0)
        message = f"cannot connect to {self.path}: {reason}"
        return ConnectError(f"{message} ({hint})" if hint else message)

    @staticmethod
    def _error(reply: Reply) -> DaemonError:
        if reply.error is not None:
            return DaemonError(reply.error, reply.code or "error")
        return DaemonError("unexpected reply from the daemon", "protocol")


class _Lines:
    """A connected socket read line by line; closes the socket on exit."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")

    def readline(self) -> bytes:
        return self._file.readline()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._sock.close()


# --- socket path --------------------------------------------------------------


def resolve_socket(socket_arg: str | None, config_arg: str | None, environ: dict[str, str] | None = None) -> str:
    """--socket, else $CTD_SOCKET, else [daemon].socket of --config/$CTD_CONFIG, else the default."""
    env = os.environ if environ is None else environ
    if socket_arg:
        return socket_arg
    if env.get("CTD_SOCKET"):
        return env["CTD_SOCKET"]
    config = config_arg or env.get("CTD_CONFIG")
    if config:
        try:
            with open(config, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConnectError(f"cannot read config {config}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConnectError(f"cannot parse config {config}: {exc}") from exc
        daemon = doc.get("daemon", {})
        path = daemon.get("socket") if isinstance(daemon, dict) else None
        return path if isinstance(path, str) and path else DEFAULT_SOCKET
    return DEFAULT_SOCKET


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
    sub.add_parser("sources", parents=[common], help="list configured sources and their pull state")
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
            _emit(out, client.call("rules.list"), args.json, render.rules_list)
        case "test":
            # Warnings (limits exceeded) are part of the report, not a failure.
            data = client.call("rules.test", name=args.name, days=args.days)
            _emit(out, data, args.json, render.rules_test)
        case other:
            raise AssertionError(f"unhandled rules action {other!r}")
    return EXIT_OK


def _run_sharing(args: argparse.Namespace, client: ControlClient, path: str, out: TextIO, err: TextIO) -> int:
    match args.action:
        case "list":
            _emit(out, client.call("sharing.list"), args.json, render.sharing_list)
        case "show":
            _emit(out, client.call("sharing.show", name=args.name), args.json, render.sharing_show)
        case "sync":
            # A pass can take long (slow destination): the daemon decides when it is over.
            data = ControlClient(path, timeout=None).call("sharing.sync", name=args.name, days=args.days)
            _emit(out, data, args.json, render.sharing_sync)
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
