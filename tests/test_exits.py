"""The exit statuses of `ctd run` are one table: ctd/exits.py, docs/operations.md and the systemd unit agree."""

from __future__ import annotations

from pathlib import Path

from ctd import exits

REPO = Path(__file__).resolve().parent.parent


def test_operations_page_lists_every_exit_status() -> None:
    """docs/operations.md has one row per exit status, with the meaning ctd/exits.py gives it."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("### Exit statuses") :]
    for e in exits.TABLE:
        row = f"| {e.code} | {e.name or '—'} | {e.meaning} | {'yes' if e.restart_helps else 'no'} |"
        assert row in section, row


def test_unit_does_not_restart_what_a_restart_cannot_cure() -> None:
    """The unit's RestartPreventExitStatus= is exactly the statuses a restart cannot fix."""
    unit = (REPO / "systemd" / "ctd.service").read_text()
    [line] = [ln for ln in unit.splitlines() if ln.startswith("RestartPreventExitStatus=")]
    assert tuple(int(c) for c in line.partition("=")[2].split()) == exits.NO_RESTART


def test_statuses_are_distinct() -> None:
    """Each cause has its own status."""
    codes = [e.code for e in exits.TABLE]
    assert len(codes) == len(set(codes))
