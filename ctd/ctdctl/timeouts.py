"""How long ctdctl waits for the daemon, per command (``--timeout SECONDS`` overrides).

Reads of state the daemon keeps answer in well under a second even under load,
so they get a short limit; commands that wait for a pull, a sharing pass or a
backup finish get a long one (a pull has the plugin's ``timeout``, 600 s by
default). A stream (``indicators export``) is limited between two items, not
in total. Past the limit ctdctl stops waiting with one line and exit code 124
(like ``timeout(1)``); the daemon may still finish what it was asked.
"""

from __future__ import annotations

import argparse
from typing import Final

SHORT: Final = 30.0
WRITE: Final = 60.0
LONG: Final = 3600.0

DEFAULTS: Final[dict[str, float]] = {
    "status": SHORT,
    "sources": SHORT,
    "stats": SHORT,
    "version": SHORT,
    "indicators show": SHORT,
    "indicators search": SHORT,
    "indicators export": 60.0,  # between two streamed items
    "indicators retract": WRITE,
    "rules list": SHORT,
    "rules test": 120.0,  # a dry run over the whole store
    "rules mute": WRITE,
    "rules unmute": WRITE,
    "sharing list": SHORT,
    "sharing show": SHORT,
    "sharing sync": LONG,  # waits for the pass
    "checkpoint show": SHORT,
    "checkpoint set": WRITE,
    "plugins list": SHORT,
    "plugins check": 60.0,  # the daemon gives a check 30 s
    "sync": LONG,  # waits for the pull
    "reload": 120.0,  # validates the file and restarts the changed actors
    "db backup": LONG,
    "db check": LONG,
}
DEFAULT: Final = 60.0  # a command this table does not name yet


def command_key(args: argparse.Namespace) -> str:
    """``"sharing sync"``, ``"status"``: the command and its action, as the table names them."""
    action = getattr(args, "action", None)
    return f"{args.command} {action}" if isinstance(action, str) else str(args.command)


def for_command(args: argparse.Namespace) -> float | None:
    """Seconds to wait for ``args``' command: ``--timeout`` if given (0: no limit), else its default."""
    given = getattr(args, "timeout", None)
    if given is not None:
        return None if given == 0 else float(given)
    return DEFAULTS.get(command_key(args), DEFAULT)


def seconds(text: str) -> float:
    """``--timeout``'s value: seconds >= 0 (0 waits as long as it takes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value
