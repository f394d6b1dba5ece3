"""Man pages ctd(8), ctdctl(8), ctd.toml(5): generated from the parsers and the schema, rendered (issue 13)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import msgspec
import pytest

from ctd import cli, config, manpages, plugins
from ctd.ctdctl.main import build_parser as ctdctl_parser
from tests.daemonproc import REPO


def render(page: str, tmp_path) -> str:
    """The page as man(1) shows it: groff if present (warnings are errors), else the roff source checked."""
    src = tmp_path / "page"
    src.write_text(page)
    groff = shutil.which("groff")
    if groff is None:
        assert page.startswith('.TH "') and "\n.SH NAME\n" in page and "\n.SH SEE ALSO\n" in page
        return re.sub(r"\\f[BIR]|\\e|\\&", "", page).replace("\\-", "-")
    r = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-rLL=100n", "-rHY=0", str(src)],
        capture_output=True,
        text=True,
        env={**os.environ, "GROFF_NO_SGR": "1"},
        check=True,
    )
    assert r.stderr == "", r.stderr  # no roff warnings
    text = re.sub(r".\x08", "", r.stdout).replace("\u2010", "-").replace("\u2212", "-")  # overstrike -> plain
    return re.sub(r"(?<=[^\s\d])  +(?=\S)", " ", text)  # justified text's extra spaces


def commands(parser, path=()):
    for path_, _, sub in manpages._subcommands(parser):
        if manpages._leaf(sub):
            yield " ".join(path_)


@pytest.mark.parametrize(
    ("page", "parser"), [(manpages.ctd_page, cli.build_parser), (manpages.ctdctl_page, ctdctl_parser)]
)
def test_command_page_has_every_subcommand_and_option(page, parser, tmp_path) -> None:
    """Every (sub)command of the parser has its own section with every option it takes."""
    text = render(page(), tmp_path)
    for path, _, sub in manpages._subcommands(parser()):
        if not manpages._leaf(sub):
            continue
        section = text.split("\n   " + " ".join(path) + "\n", 1)
        assert len(section) == 2, f"no section for {' '.join(path)}"
        body = re.split(r"\n   (?=\S)", section[1], maxsplit=1)[0]
        skip = {"-h", "--help"} | ({"--json", "--socket", "--config"} if page is manpages.ctdctl_page else set())
        for action in sub._actions:
            for opt in set(action.option_strings) - skip:
                assert opt in body, f"{' '.join(path)}: {opt}"


def _keys(tp) -> list[str]:
    return [f.name for f in msgspec.structs.fields(tp) if f.name != "options"]


def test_config_page_has_every_key(tmp_path) -> None:
    """ctd.toml(5) names every key of every core table, every adapter and every action's params."""
    text = render(manpages.toml_page(), tmp_path)
    wanted = {*_keys(config.DaemonConfig), *_keys(config.PluginConfig), *_keys(config.SharingConfig)}
    wanted |= set(_keys(config.RuleConfig)) | set(_keys(config.AllowlistConfig))
    for name in plugins.available():
        cls = plugins.adapter_class(name)
        assert f'adapter = "{name}"' in text
        wanted |= set(_keys(cls.Config))
        for spec in cls.ACTIONS.values():
            wanted |= set(_keys(spec.params))
    missing = sorted(k for k in wanted if not re.search(rf"^\s+{re.escape(k)} = ", text, re.M))
    assert not missing, missing


def test_exit_status_and_types_are_readable(tmp_path) -> None:
    """The ctdctl page lists the exit codes; the config page writes types and defaults a reader understands."""
    assert re.search(r"^\s+4\s+the value, source", render(manpages.ctdctl_page(), tmp_path), re.M)
    text = render(manpages.toml_page(), tmp_path)
    assert 'log_level = "debug" | "info" | "warning" | "error"' in text
    assert "aging_days = integer (0..365)" in text and "Default: 90." in text


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed")
def test_make_man_writes_pages_man_reads(tmp_path) -> None:
    """`python -m ctd.manpages --out DIR` (what make man runs) writes the three pages; `man -l ./ctd.8` reads one."""
    subprocess.run(
        [sys.executable, "-m", "ctd.manpages", "--out", str(tmp_path)], check=True, cwd=REPO, capture_output=True
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctd.8", "ctd.toml.5", "ctdctl.8"]
    r = subprocess.run(
        ["man", "-l", "./ctd.8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
    )
    assert r.returncode == 0 and "check-config" in r.stdout.replace("‐", "-")


def test_make_install_man_installs_under_mandir(tmp_path) -> None:
    """`make install-man` installs ctd.8 and ctdctl.8 in man8 and ctd.toml.5 in man5 under DESTDIR/MANDIR."""
    r = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "install-man",
            f"DESTDIR={tmp_path}",
            f"MANPY={sys.executable}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    base = tmp_path / "usr/local/share/man"
    assert (
        (base / "man8/ctd.8").is_file() and (base / "man8/ctdctl.8").is_file() and (base / "man5/ctd.toml.5").is_file()
    )
