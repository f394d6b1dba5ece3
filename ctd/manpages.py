"""Man pages ctd(8), ctdctl(8) and ctd.toml(5), generated from the code so they cannot drift.

The command pages walk the argparse parsers (``ctd.cli.build_parser`` and
ctdctl's ``build_parser``): every command, its help, its arguments. The
config page walks the msgspec Structs of ``ctd.config`` and every installed
adapter's ``Config`` and action ``params``: every key with its type and
default. Hand-written text is limited to what a parser cannot say (files,
signals, environment). ``python -m ctd.manpages [--out DIR]`` writes the three
files (``make man`` puts them in build/man; ``man ./build/man/ctd.8`` reads one).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from ctd import __version__, cli, config, plugins
from ctd.ctdctl import main as ctdctl

SOURCE_DATE = datetime.date(2026, 1, 1).isoformat()  # fixed: the pages change only when the code does


def roff(text: Any) -> str:
    """Text safe in a roff line: backslashes, minus signs, and a leading dot or quote."""
    s = str(text).replace("\\", "\\e").replace("-", "\\-")
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


def _header(name: str, section: int, title: str) -> list[str]:
    return [
        f'.TH "{name.upper()}" "{section}" "{SOURCE_DATE}" "ctd {__version__}" "{title}"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(_DESCRIPTIONS[name])}",
    ]


_DESCRIPTIONS = {
    "ctd": "threat-exchange daemon: pulls IoCs from sources, shares them with destinations",
    "ctdctl": "control a running ctd over its control socket",
    "ctd.toml": "configuration file of the ctd threat-exchange daemon",
}


# --- commands (argparse) ---------------------------------------------------------------


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """(command path, help, parser) for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name) or "", sub
                yield from _subcommands(sub, (*path, name))


def _leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def _usage(parser: argparse.ArgumentParser, global_opts: frozenset[str]) -> str:
    """The usage line without ``usage:``, -h and the global options every command repeats (ctdctl's)."""
    text = " ".join(parser.format_usage().split()[1:]) + " "
    text = text.replace("[-h] ", "")
    for a in parser._actions:
        if set(a.option_strings) & global_opts:
            opt = a.option_strings[-1]
            text = text.replace(f"[{opt}] " if a.nargs == 0 else f"[{opt} {a.metavar}] ", "")
    return text.strip()


def _options(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> list[str]:
    out = []
    for a in parser._actions:
        if isinstance(a, (argparse._SubParsersAction, argparse._HelpAction)) or a.help == argparse.SUPPRESS:
            continue
        if a.option_strings and set(a.option_strings) & skip:
            continue
        if a.option_strings:
            metavar = "" if a.nargs == 0 else _metavar(a)
            head = ", ".join(f"\\fB{roff(o)}\\fR" for o in a.option_strings)
            head += f" \\fI{roff(metavar)}\\fR" if metavar else ""
        else:
            head = f"\\fI{roff(a.metavar or a.dest)}\\fR"
        helptext = a.help or ""
        if a.choices and not a.option_strings:
            helptext = f"{helptext} (one of: {', '.join(map(str, a.choices))})".strip()
        out += [".TP", head, roff(helptext.replace("%(default)s", str(a.default)))]
    return out


def _metavar(a: argparse.Action) -> str:
    if isinstance(a.metavar, str):
        return a.metavar
    if a.choices:
        return "{" + ",".join(map(str, a.choices)) + "}"
    return a.dest.upper()


def _commands(parser: argparse.ArgumentParser, prog: str, global_opts: frozenset[str]) -> list[str]:
    out = [".SH COMMANDS"]
    for path, helptext, sub in _subcommands(parser):
        if not _leaf(sub):
            continue
        out += [".SS " + roff(" ".join(path)), roff(helptext[:1].upper() + helptext[1:]) + "." if helptext else ""]
        out += [
            ".PP",
            "\\fB"
            + roff(prog)
            + "\\fR "
            + roff(_usage(sub, global_opts).split(" ", 1)[1] if " " in _usage(sub, global_opts) else ""),
        ]
        opts = _options(sub, global_opts)
        if opts:
            out += [".RS", *opts, ".RE"]
    return out


def ctd_page() -> str:
    parser = cli.build_parser()
    lines = _header("ctd", 8, "System Manager's Manual")
    lines += [
        ".SH SYNOPSIS",
        "\\fBctd\\fR \\fBrun\\fR [\\fB\\-\\-config\\fR \\fIPATH\\fR] [\\fB\\-\\-once\\fR]",
        ".br",
        "\\fBctd\\fR \\fBcheck\\-config\\fR [\\fIPATH\\fR]",
        ".br",
        "\\fBctd\\fR \\fB\\-\\-version\\fR",
    ]
    lines += [
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        "It runs under systemd (Type=notify, a watchdog, logs to the journal) and is driven by",
        "\\fBctdctl\\fR(8) over a Unix socket. Its configuration is described in \\fBctd.toml\\fR(5).",
    ]
    lines += _commands(parser, "ctd", frozenset())
    lines += [
        ".SH SIGNALS",
        ".TP",
        "\\fBSIGHUP\\fR",
        "Reload: validate the whole file; an invalid file is rejected (config_rejected) and the old one keeps running.",
        ".TP",
        "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
        "Graceful stop: sources first, then sharing; exit 0.",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBCTD_CONFIG\\fR",
        "The config file when none is given (default /etc/ctd/ctd.toml).",
        ".TP",
        "\\fBCTD_LOG_FORMAT\\fR",
        "\\fBjson\\fR or \\fBconsole\\fR: the log format on stderr (default: console on a terminal, JSON elsewhere).",
        ".TP",
        "\\fBNO_COLOR\\fR",
        "No colours in the console log format.",
        ".TP",
        "\\fBCREDENTIALS_DIRECTORY\\fR",
        'Where \\fI{ credential = "NAME" }\\fR secrets are read (systemd LoadCredential=).',
        ".TP",
        "\\fBRUNTIME_DIRECTORY\\fR",
        "Where the daemon publishes its socket path (control.json) for ctdctl.",
        ".TP",
        "\\fBCTD_JOURNAL_SOCKET\\fR",
        "The journald socket used under systemd.",
        ".SH FILES",
        ".TP",
        "/etc/ctd/ctd.toml",
        "The configuration, see \\fBctd.toml\\fR(5).",
        ".TP",
        "/var/lib/ctd/ctd.db",
        "The SQLite store ([daemon] state_dir).",
        ".TP",
        "/run/ctd/ctd.sock",
        "The control socket ([daemon] socket).",
        ".SH EXIT STATUS",
        "0 after a clean stop or a valid config (check\\-config); 2 for an invalid config; 1 when the daemon fails.",
        ".SH SEE ALSO",
        "\\fBctdctl\\fR(8), \\fBctd.toml\\fR(5), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


def ctdctl_page() -> str:
    parser = ctdctl.build_parser()
    globals_ = frozenset({"--json", "--socket", "--config"})
    lines = _header("ctdctl", 8, "System Manager's Manual")
    lines += [
        ".SH SYNOPSIS",
        "\\fBctdctl\\fR [\\fB\\-\\-json\\fR] [\\fB\\-\\-socket\\fR \\fIPATH\\fR] "
        "[\\fB\\-\\-config\\fR \\fIPATH\\fR] \\fICOMMAND\\fR ...",
    ]
    lines += [
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        "Read commands need membership of the socket's group; commands that change state need root,",
        "the daemon's user or [daemon] admin_group. The global options may also follow the command.",
        ".SH OPTIONS",
        *_options(parser),
    ]
    lines += _commands(parser, "ctdctl", globals_)
    lines += [".SH EXIT STATUS"]
    for code, meaning in sorted(ctdctl.EXIT_MEANINGS.items()):
        lines += [".TP", f"\\fB{code}\\fR", roff(meaning)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBCTD_SOCKET\\fR",
        "The control socket when \\-\\-socket is not given.",
        ".TP",
        "\\fBCTD_CONFIG\\fR",
        "The config whose [daemon] socket is used when neither is given.",
        ".TP",
        "\\fBRUNTIME_DIRECTORY\\fR",
        "Searched for the daemon's published socket (control.json) when the config does not parse.",
        ".SH SEE ALSO",
        "\\fBctd\\fR(8), \\fBctd.toml\\fR(5)",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


# --- the config file (msgspec Structs) ----------------------------------------------------


def type_name(tp: Any) -> str:
    """A readable type: ``integer (1..10)``, ``"a" | "b"``, ``list of string``, ``duration``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *metas = args
        bounds = [f"{m.ge}.." if m.ge is not None else "" for m in metas if isinstance(m, msgspec.Meta)]
        hi = [str(m.le) for m in metas if isinstance(m, msgspec.Meta) and m.le is not None]
        extra = f" ({bounds[0] if bounds else ''}{hi[0] if hi else ''})" if (bounds and bounds[0]) or hi else ""
        return type_name(base) + extra
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    names = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if tp in names:
        return names[tp]
    if tp is config.Duration:
        return 'duration ("90s", "15m", "6h", "7d")'
    if tp is config.Secret:
        return "secret string (or KEY_file, or { credential = NAME })"
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _default(f: msgspec.structs.FieldInfo) -> str:
    if f.default is not msgspec.NODEFAULT:
        value = f.default
    elif f.default_factory is not msgspec.NODEFAULT:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, config.Duration):
        return f"{int(value)}s"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def struct_keys(tp: type[msgspec.Struct], skip: frozenset[str] = frozenset()) -> list[str]:
    """``.TP`` entries, one per key of the Struct ``tp``."""
    hints = typing.get_type_hints(tp, include_extras=True)
    out = []
    for f in msgspec.structs.fields(tp):
        if f.name in skip:
            continue
        out += [
            ".TP",
            f"\\fB{roff(f.name)}\\fR = \\fI{roff(type_name(hints[f.name]))}\\fR",
            f"Default: {roff(_default(f))}.",
        ]
    return out


def _doc(tp: Any) -> str:
    return roff(" ".join((tp.__doc__ or "").split("\n\n")[0].split()))


def toml_page() -> str:
    lines = _header("ctd.toml", 5, "File Formats Manual")
    lines += [
        ".SH SYNOPSIS",
        "/etc/ctd/ctd.toml",
        ".SH DESCRIPTION",
        "The configuration of \\fBctd\\fR(8), in TOML. Every table and key is listed below with its type and",
        "default; \\fBctd check\\-config\\fR validates a file and names the location of each error.",
        "A reload (\\fBsystemctl reload ctd\\fR) validates the whole file before applying it.",
        ".SH [daemon]",
        *struct_keys(config.DaemonConfig),
        ".SH [allowlist]",
        "Values, networks and domains that are never active.",
        *struct_keys(config.AllowlistConfig),
        ".SH [plugins.NAME]",
        "One table per plugin: a source, a destination or both. The keys every plugin has:",
        *struct_keys(config.PluginConfig, frozenset({"options"})),
        ".PP",
        "The adapter's own keys go in the same table:",
    ]
    for name in sorted(plugins.available()):
        cls = plugins.adapter_class(name)
        caps = ", ".join(
            c for c, ok in (("pull", cls.can_pull), ("push", cls.can_push), ("serve", cls.can_serve)) if ok
        )
        lines += [f'.SS "adapter = \\(dq{roff(name)}\\(dq"', f"{_doc(cls)} ({caps})."]
        keys = struct_keys(cls.Config)
        lines += [".RS", *keys, ".RE"] if keys else ["No keys of its own."]
        for action, spec in sorted(cls.ACTIONS.items()):
            lines += [".PP", f"Action \\fB{roff(action)}\\fR ({spec.mode}): {roff(spec.description)}. Its params:"]
            params = struct_keys(spec.params)
            lines += [".RS", *params, ".RE"] if params else ["none."]
    lines += [
        ".SH [rules.NAME]",
        "A business rule: a filter in ctd's rule language and exceptions.",
        *struct_keys(config.RuleConfig),
        ".SH [sharing.NAME]",
        _doc(config.SharingConfig),
        *struct_keys(config.SharingConfig),
        ".SH [tenants.NAME]",
        "Connection settings shared by several plugins (a tenant URL and secrets), "
        "validated by the adapters that name it.",
        ".SH SEE ALSO",
        "\\fBctd\\fR(8), \\fBctdctl\\fR(8)",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


PAGES = {"ctd.8": ctd_page, "ctdctl.8": ctdctl_page, "ctd.toml.5": toml_page}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctd.manpages", description="write ctd's man pages")
    p.add_argument("--out", default="build/man", help="directory (default build/man)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        (out / name).write_text(page())
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
