"""ctdctl operator commands: checkpoints, plugins, manual retraction, rule mutes,
stats and version (their arguments, dispatch and human output).

``ctdctl.py`` builds the parser and calls :func:`run` first; ``run`` returns
``None`` for the commands it does not own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Final, Protocol, TextIO

import msgspec

from ctd import __version__
from ctd.ctdctl.render import cell, emit, human_bytes, kv, table, to_json
from ctd.ctdctl.render_sharing import LEDGER_STATES
from ctd.errors import CtdError

EXIT_OK, EXIT_FAILED = 0, 2


class Client(Protocol):
    def call(self, cmd: str, /, **args: Any) -> Any: ...


Connect = Callable[[], Client]  # a client with the command's timeout (ctd.ctdctl.timeouts)


# --- arguments ----------------------------------------------------------------


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The top-level operator commands: checkpoint, plugins, stats, version."""
    cp = sub.add_parser("checkpoint", parents=[common], help="show or move where a source's next pull starts")
    csub = cp.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = csub.add_parser("show", parents=[common], help="show a source's checkpoint, resume point and cursor")
    p.add_argument("source", metavar="SOURCE")
    p = csub.add_parser("set", parents=[common], help="make the next pull of a source start from a given time")
    p.add_argument("source", metavar="SOURCE")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--since", metavar="ISO8601", help="start from this time (e.g. 2026-01-01T00:00:00Z)")
    g.add_argument("--days", metavar="N", type=int, help="start from N days ago")
    p = csub.add_parser(
        "reset", parents=[common], help="forget a source's checkpoint and cursor: the next pull reads all again"
    )
    p.add_argument("source", metavar="SOURCE")

    pl = sub.add_parser("plugins", parents=[common], help="list plugins or test a plugin's connectivity")
    psub = pl.add_subparsers(dest="action", metavar="ACTION", required=True)
    psub.add_parser("list", parents=[common], help="list plugins, their actions and who uses them")
    p = psub.add_parser("check", parents=[common], help="test a plugin's connectivity (takes up to 30 s)")
    p.add_argument("name", metavar="NAME")

    sub.add_parser("stats", parents=[common], help="show counts, ledger states, store sizes, queues and rates")
    sub.add_parser("version", parents=[common], help="show the versions of ctdctl and of the daemon")


def add_indicator_actions(isub: Any, common: argparse.ArgumentParser) -> None:
    """``indicators retract`` and ``indicators unretract``."""
    p = isub.add_parser(
        "retract",
        parents=[common],
        help="retract an indicator by hand (one source or all), kept against re-reports until lifted",
    )
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--source", metavar="S", help="only this source's sighting (default: every source)")
    p.add_argument("--type", metavar="T")
    p.add_argument(
        "--until",
        metavar="WHEN",
        help="keep it retracted until then: ISO 8601 time or a duration from now (2h, 7d); default: until unretract",
    )
    p = isub.add_parser("unretract", parents=[common], help="lift an operator's retraction of an indicator")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--source", metavar="S", help="only the retraction for this source (default: all of them)")
    p.add_argument("--type", metavar="T")


def add_rules_actions(rsub: Any, common: argparse.ArgumentParser) -> None:
    """``rules mute`` and ``rules unmute``."""
    p = rsub.add_parser("mute", parents=[common], help="stop a rule sharing anything until a given time")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--until",
        metavar="WHEN",
        required=True,
        help="ISO 8601 time (2026-12-01T08:00:00Z) or a duration from now (2h, 7d)",
    )
    p = rsub.add_parser("unmute", parents=[common], help="lift a rule's mute now")
    p.add_argument("name", metavar="NAME")


# --- dispatch -----------------------------------------------------------------


def run(args: argparse.Namespace, connect: Connect, out: TextIO) -> int | None:
    """Run an operator command and return its exit code; ``None`` if ``args`` is another command."""
    as_json = args.json
    match args.command, getattr(args, "action", None):
        case "checkpoint", "show":
            emit(out, connect().call("checkpoint.show", source=args.source), as_json, checkpoint_show)
        case "checkpoint", "set":
            data = connect().call("checkpoint.set", source=args.source, since=args.since, days=args.days)
            emit(out, data, as_json, checkpoint_set)
        case "checkpoint", "reset":
            emit(out, connect().call("checkpoint.reset", source=args.source), as_json, checkpoint_set)
        case "plugins", "list":
            emit(out, connect().call("plugins.list"), as_json, plugins_list)
        case "plugins", "check":
            data = connect().call("plugins.check", name=args.name)
            emit(out, data, as_json, plugins_check)
            return EXIT_OK if data.get("ok") else EXIT_FAILED
        case "indicators", "retract":
            data = connect().call(
                "indicators.retract", value=args.value, source=args.source, type=args.type, until=args.until
            )
            emit(out, data, as_json, retract)
        case "indicators", "unretract":
            data = connect().call("indicators.unretract", value=args.value, source=args.source, type=args.type)
            emit(out, data, as_json, unretract)
        case "rules", "mute":
            emit(out, connect().call("rules.mute", name=args.name, until=args.until), as_json, mute)
        case "rules", "unmute":
            emit(out, connect().call("rules.unmute", name=args.name), as_json, mute)
        case "stats", _:
            emit(out, connect().call("stats"), as_json, stats)
        case "version", _:
            version(connect, as_json, out)
        case _:
            return None
    return EXIT_OK


def version(connect: Connect, as_json: bool, out: TextIO) -> None:
    """The client's version first (it needs no daemon), then the daemon's versions.

    ``--json`` prints ``{"client": {"version"}, "daemon": data}`` (``daemon`` is null when
    the daemon cannot be reached; the error is raised after printing).
    """
    client = {"version": __version__}
    if not as_json:
        out.write(f"{'client'.ljust(_VERSION_WIDTH)}  {__version__}\n")
        out.flush()
    try:
        data = connect().call("version")
    except CtdError:
        if as_json:
            out.write(to_json({"client": client, "daemon": None}))
            out.flush()
        raise
    if as_json:
        out.write(to_json({"client": client, "daemon": data}))
    else:
        kv(out, [("daemon".ljust(_VERSION_WIDTH), data.get("version")), *((k, data.get(k)) for k in _VERSION_KEYS)])
    out.flush()


_VERSION_KEYS: Final = ("python", "trio", "httpx", "msgspec", "sqlite")
_VERSION_WIDTH: Final = max(len(k) for k in ("client", "daemon", *_VERSION_KEYS))


# --- human output -------------------------------------------------------------


def _value(value: Any) -> str:
    """A table cell; dicts and nested lists (cursors, resume points) as compact JSON."""
    if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        return msgspec.json.encode(value).decode()
    return cell(value)


def checkpoint_show(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl checkpoint show``: a key/value block."""
    kv(
        out,
        [
            ("source", data.get("source")),
            ("last run", data.get("last_run")),
            ("last success", data.get("last_success")),
            ("last error", data.get("last_error")),
            ("resume point", _value(data.get("resume_point"))),
            ("cursor", _value(data.get("cursor"))),
        ],
    )


def checkpoint_set(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl checkpoint set`` / ``reset``: the new checkpoint and what happens next."""
    kv(out, [("source", data.get("source")), ("last run", data.get("last_run"))])
    if data.get("note"):
        out.write(f"\n{data['note']}\n")


def _used_by(p: dict[str, Any]) -> str | None:
    parts = []
    if p.get("sources_of"):
        parts.append("source of " + ",".join(p["sources_of"]))
    if p.get("destination_of"):
        parts.append("destination of " + ",".join(p["destination_of"]))
    return "; ".join(parts) or None


def plugins_list(out: TextIO, data: list[dict[str, Any]]) -> None:
    """``ctdctl plugins list``: one row per plugin, then its actions with their descriptions."""
    if not data:
        out.write("no plugins configured\n")
        return
    table(
        out,
        ("NAME", "ADAPTER", "PULL", "PUSH", "ACTIONS", "USED_BY"),
        [
            (
                p.get("name"),
                p.get("adapter"),
                p.get("pull"),
                p.get("can_push"),
                sorted(p.get("actions") or {}),
                _used_by(p),
            )
            for p in data
        ],
    )
    actions = [
        (p.get("name"), a, spec.get("mode"), spec.get("description"))
        for p in data
        for a, spec in sorted((p.get("actions") or {}).items())
    ]
    if actions:
        out.write("\n")
        table(out, ("PLUGIN", "ACTION", "MODE", "DESCRIPTION"), actions)
    insecure = [p.get("name") for p in data if p.get("verify_tls") is False]
    if insecure:
        out.write("\n")
        table(out, ("WARNING",), [(f"{n}: TLS certificates are not verified (verify_tls = false)",) for n in insecure])


def plugins_check(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl plugins check``: ``NAME: ok - message`` or ``NAME: FAILED - message``."""
    outcome = "ok" if data.get("ok") else "FAILED"
    checks = data.get("checks") or []
    if len(checks) > 1:  # a connectivity test and sharing targets: one line each
        out.write(f"{data.get('plugin')}: {outcome}\n")
        for c in checks:
            out.write(f"  {c.get('check')}: {'ok' if c.get('ok') else 'FAILED'} - {c.get('message')}\n")
        return
    message = data.get("message")
    out.write(f"{data.get('plugin')}: {outcome} - {message}\n" if message else f"{data.get('plugin')}: {outcome}\n")


def retract(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl indicators retract``: how many sightings were retracted."""
    source = data.get("source")
    kv(
        out,
        [
            ("value", data.get("value")),
            ("source", source if source is not None else "all sources"),
            ("retracted", data.get("retracted", 0)),
            ("kept until", data.get("until") or "lifted (ctdctl indicators unretract)"),
        ],
    )


def unretract(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl indicators unretract``: how many operator retractions were lifted, and what happens next."""
    source = data.get("source")
    kv(
        out,
        [
            ("value", data.get("value")),
            ("source", source if source is not None else "all sources"),
            ("lifted", data.get("lifted", 0)),
        ],
    )
    if data.get("note"):
        out.write(f"\n{data['note']}\n")


def mute(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl rules mute`` / ``unmute``: the rule and its mute."""
    until = data.get("muted_until")
    kv(out, [("rule", data.get("rule")), ("muted until", until if until else "not muted")])


human_size = human_bytes


def stats(out: TextIO, data: dict[str, Any]) -> None:
    """``ctdctl stats``: indicators by type and source, sharing ledgers, store, queues, rates."""
    counts = data.get("indicators") or {}
    out.write(f"indicators: {counts.get('total', 0)} total, {counts.get('active', 0)} active\n\n")
    by_type = counts.get("by_type") or {}
    table(
        out,
        ("TYPE", "ACTIVE", "INACTIVE"),
        [(t, c.get("active", 0), c.get("inactive", 0)) for t, c in sorted(by_type.items())],
    )
    out.write("\n")
    table(out, ("SOURCE", "INDICATORS"), sorted((data.get("by_source") or {}).items()))
    sharing = data.get("sharing") or {}
    out.write("\n")
    if sharing:
        table(
            out,
            ("SHARING", *(s.upper() for s in LEDGER_STATES)),
            [(name, *(c.get(s, 0) for s in LEDGER_STATES)) for name, c in sorted(sharing.items())],
        )
    else:
        out.write("no sharing configured\n")
    store = data.get("store") or {}
    out.write("\n")
    table(
        out,
        ("FILE", "SIZE", "BYTES"),
        [(f, human_size(store.get(f, 0)), store.get(f, 0)) for f in ("db", "db_wal", "db_shm")],
    )
    out.write(f"store requests {store.get('requests', 0)}, busy {store.get('busy_seconds', 0)} s\n\n")
    table(out, ("QUEUE", "DEPTH"), sorted((data.get("queues") or {}).items()))
    rates = data.get("rates") or {}
    out.write("\n")
    table(
        out,
        ("RATE", "LAST_MINUTE", "LAST_HOUR"),
        [
            (k, (rates.get(k) or {}).get("last_minute", 0), (rates.get(k) or {}).get("last_hour", 0))
            for k in ("ingested", "shared")
        ],
    )
