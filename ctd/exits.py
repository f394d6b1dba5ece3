"""The exit statuses of ``ctd run`` (and ``--once``, ``check-config --deep``), sysexits(3)-style.

One table, written once: the CLI exits with these, ``check-config --deep`` reports
a failed check with the status ``ctd run`` would exit with, the systemd unit's
``RestartPreventExitStatus=`` lists the ones a restart cannot cure, and
docs/operations.md prints the table (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Exit(NamedTuple):
    code: int
    name: str
    meaning: str
    restart_helps: bool  # would systemd's Restart=on-failure fix it without an operator?


OK: Final = 0
FAILURE: Final = 1  # an unexpected error (a bug): the traceback is in the log
CONFIG: Final = 2  # the configuration file is invalid (as ``check-config``)
DATAERR: Final = 65  # EX_DATAERR
NOINPUT: Final = 66  # EX_NOINPUT
CANTCREAT: Final = 73  # EX_CANTCREAT
IOERR: Final = 74  # EX_IOERR
TEMPFAIL: Final = 75  # EX_TEMPFAIL
PROTOCOL: Final = 76  # EX_PROTOCOL
NOPERM: Final = 77  # EX_NOPERM
FSTYPE: Final = 78  # EX_CONFIG

TABLE: Final = (
    Exit(OK, "", "stopped cleanly (SIGTERM/SIGINT), or `--once` had no failure", False),
    Exit(FAILURE, "", "an unexpected error (a bug: its traceback is logged); `--once`: a pull or pass failed", True),
    Exit(CONFIG, "", "the configuration is invalid (`ctd check-config` says where)", False),
    Exit(
        DATAERR,
        "EX_DATAERR",
        "the database is damaged or not ctd's: not SQLite (garbage header), truncated, "
        "SQLite's quick check failed, or another program's database",
        False,
    ),
    Exit(
        NOINPUT,
        "EX_NOINPUT",
        "the database is missing or empty while ledger backups exist in `state_dir/backups`, "
        "or a `-wal` file lies there without its database",
        False,
    ),
    Exit(CANTCREAT, "EX_CANTCREAT", "state_dir (or the socket's directory) cannot be created or written", False),
    Exit(IOERR, "EX_IOERR", "an I/O error on the database; `--once`: state_dir is full", True),
    Exit(
        TEMPFAIL,
        "EX_TEMPFAIL",
        "another ctd holds the state_dir's lock (`state_dir/ctd.lock`) or answers on the control socket",
        True,
    ),
    Exit(PROTOCOL, "EX_PROTOCOL", "the database's schema is newer than this ctd (a downgrade)", False),
    Exit(NOPERM, "EX_NOPERM", "permission denied on state_dir, the database or the socket's directory", False),
    Exit(
        FSTYPE,
        "EX_CONFIG",
        "state_dir or the socket is on a filesystem that cannot hold them (/proc, /sys, ...)",
        False,
    ),
)

# For the unit's RestartPreventExitStatus=: a restart cannot fix these.
NO_RESTART: Final = tuple(e.code for e in TABLE if not e.restart_helps and e.code != OK)
