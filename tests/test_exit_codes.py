"""No silent no-ops: unknown names are errors listing the known ones; one exit-code table everywhere (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ctd.ctdctl import main as ctdctl_main
from tests.daemonproc import REPO, DaemonProc, short_tmpdir, wait_for

FEED = """
[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"
"""


@pytest.fixture(scope="module")
def daemon():
    d = DaemonProc(short_tmpdir(), FEED)
    (d.dir / "osint.txt").write_text("evil.example\n")
    d.start().wait_ready()
    wait_for(lambda: d.ctl_json("indicators", "search"), "the first pull")
    yield d
    d.cleanup()


@pytest.mark.parametrize(
    ("argv", "known"),
    [
        (["indicators", "search", "--type", "hash"], "sha256"),
        (["indicators", "search", "--source", "nosuch"], "osint"),
        (["indicators", "export", "--type", "bogus"], "md5"),
        (["indicators", "export", "--source", "nosuch"], "osint"),
        (["indicators", "show", "evil.example", "--type", "hash"], "domain"),
        (["indicators", "retract", "evil.example", "--source", "nosuch"], "osint"),
    ],
)
def test_unknown_type_or_source_is_an_error_listing_the_known_ones(daemon, argv, known) -> None:
    """An unknown --type or --source exits 2 with one line naming the valid values, never an empty answer."""
    r = daemon.ctl(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    [line] = r.stderr.splitlines()
    assert "unknown" in line and "known:" in line and known in line
    assert r.stdout == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["indicators", "show", "nosuch.example"],
        ["indicators", "retract", "nosuch.example"],
        ["indicators", "unretract", "nosuch.example"],
        ["sync", "nosuch"],
        ["checkpoint", "show", "nosuch"],
        ["rules", "test", "nosuch"],
        ["sharing", "show", "nosuch"],
        ["plugins", "check", "nosuch"],
    ],
)
def test_what_the_command_names_does_not_exist_exits_4(daemon, argv) -> None:
    """Every command whose VALUE/SOURCE/NAME does not exist exits 4 with one line (show and retract alike)."""
    r = daemon.ctl(*argv)
    assert r.returncode == ctdctl_main.EXIT_NOT_FOUND == 4, (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1


def test_exit_code_table_matches_the_code() -> None:
    """docs/ctdctl.md's exit-code table lists exactly the codes ctdctl's main module defines."""
    page = (REPO / "docs" / "ctdctl.md").read_text()
    section = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    defined = {v for k, v in vars(ctdctl_main).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert defined <= documented, (defined, documented)
    assert Path(ctdctl_main.__file__).read_text().count("return 1\n") == 0  # codes by name only
