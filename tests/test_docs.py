"""The docs cannot drift from the code: config examples validate, command lines
parse, reference tables name every key and command, links resolve.

How examples are marked (``toml fragment``, ``from=PATH``) is described in
docs/README.md, "Keeping the docs true".
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import io
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w

from ctd import cli
from ctd.adapters.http import HttpOptions
from ctd.config import (
    AllowlistConfig,
    DaemonConfig,
    PluginConfig,
    RuleConfig,
    SharingConfig,
    adapter_class,
    parse_config,
)
from ctd.ctdctl import main as ctdctl_main
from ctd.errors import ConfigError
from tests import docscan
from tests.docscan import ROOT, Block

KNOWN_INFO = {"", "toml", "sh", "console", "ini", "yaml"}
ADAPTERS = (
    "file",
    "feed",
    "rss",
    "webpage",
    "taxii",
    "edl",
    "netskope",
    "misp",
    "crowdstrike",
    "defender",
    "mimecast",
    "sentinelone",
)
PARSERS = {"ctd": cli.build_parser, "ctdctl": ctdctl_main.build_parser}

ALL_BLOCKS = [b for path in docscan.doc_files() for b in docscan.blocks(path)]
TOML_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "toml"]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("sh", "console")]
COMMANDS = [
    (b, off, prog, argv)
    for b in SHELL_BLOCKS
    for off, line in docscan.command_lines(b)
    for prog, argv in docscan.ctd_invocations(line)
]


# --- config examples ---------------------------------------------------------------


def _stand_ins(doc: dict[str, Any]) -> None:
    """Add the sources and rules a fragment's sharing configurations name but do not define."""
    plugins = doc.setdefault("plugins", {})
    rules = doc.setdefault("rules", {})
    for sh in doc.get("sharing", {}).values():
        for name in sh.get("sources", []):
            plugins.setdefault(name, {"adapter": "file", "path": "stand-in.txt"})
        if isinstance(sh.get("rule"), str):
            rules.setdefault(sh["rule"], {"filter": "type = url"})


def _placeholder(key: str) -> str:
    return "https://feed.example/secret-path" if key.endswith("url") else "docs-example-secret"


def _supply_machine(node: Any, tmp: Path) -> None:
    """Secret files, credentials and groups exist on a real machine; here they are made up."""
    if isinstance(node, list):
        for item in node:
            _supply_machine(item, tmp)
        return
    if not isinstance(node, dict):
        return
    for key, value in list(node.items()):
        if key.endswith("_file") and key != "ca_file" and isinstance(value, str):
            secret = tmp / f"secret-{len(list(tmp.iterdir()))}"
            secret.write_text(_placeholder(key[: -len("_file")]) + "\n")
            node[key] = str(secret)
        elif isinstance(value, dict) and set(value) == {"credential"}:
            (tmp / "credentials").mkdir(exist_ok=True)
            (tmp / "credentials" / value["credential"]).write_text(_placeholder(key))
        else:
            _supply_machine(value, tmp)
    daemon = node.get("daemon")
    if isinstance(daemon, dict):
        mine = grp.getgrgid(os.getgid()).gr_name
        for key in ("socket_group", "admin_group"):
            if key in daemon:
                daemon[key] = mine


def _from_file(block: Block, doc: dict[str, Any]) -> None:
    """With ``from=PATH``: every table of the block is the same table in PATH."""
    for opt in block.options:
        if not opt.startswith("from="):
            continue
        ref = tomllib.loads((ROOT / opt[len("from=") :]).read_text())
        for section, body in doc.items():
            if section in ("plugins", "rules", "sharing", "tenants"):
                for name, table in body.items():
                    assert ref.get(section, {}).get(name) == table, (
                        f"{block.where()}: [{section}.{name}] differs from {opt[5:]}"
                    )
            else:
                assert ref.get(section) == body, f"{block.where()}: [{section}] differs from {opt[5:]}"


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.where())
def test_config_example_validates(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``toml`` example in the docs is a valid ctd config (or a valid fragment of one)."""
    assert set(block.options) - {"fragment"} <= {o for o in block.options if o.startswith("from=")}, block.where()
    doc = tomllib.loads(block.text)
    _from_file(block, doc)
    if "fragment" in block.options:
        _stand_ins(doc)
    _supply_machine(doc, tmp_path)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    try:
        parse_config(tomli_w.dumps(doc), block.where())
    except ConfigError as exc:
        pytest.fail(f"{block.where()}: {exc}")


def test_config_checker_catches_a_bad_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example check fails on a key the adapter does not have (it is not vacuous)."""
    bad = Block(
        ROOT / "README.md",
        1,
        "toml fragment",
        '[plugins.x]\nadapter = "misp"\nurl = "https://m.example"\ntoken = "k"\n',
    )
    with pytest.raises(pytest.fail.Exception, match="token"):
        test_config_example_validates(bad, tmp_path, monkeypatch)


def test_fragment_from_file_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``from=etc/ctd.toml`` example that differs from the file fails."""
    bad = Block(
        ROOT / "docs/rules.md",
        1,
        "toml fragment from=etc/ctd.toml",
        '[rules.urls]\nfilter = "type = url"\nexceptions = [\'value ~ "*://goodurl.com/*"\']\n',
    )
    with pytest.raises(AssertionError, match="differs"):
        test_config_example_validates(bad, tmp_path, monkeypatch)


# --- command lines -------------------------------------------------------------------


def _parse(prog: str, argv: list[str]) -> tuple[int, str]:
    """The exit status argparse gives ``argv`` (0 when it parses) and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            PARSERS[prog]().parse_args(argv)
        except SystemExit as exc:
            return (exc.code if isinstance(exc.code, int) else 1), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.parametrize(
    ("block", "offset", "prog", "argv"), COMMANDS, ids=[f"{b.where(off + 1)}:{prog}" for b, off, prog, _ in COMMANDS]
)
def test_command_line_parses(block: Block, offset: int, prog: str, argv: list[str]) -> None:
    """Every ``ctd``/``ctdctl`` command shown in a ``sh``/``console`` block parses with the real parser."""
    code, said = _parse(prog, argv)
    assert code == 0, f"{block.where(offset + 1)}: {prog} {' '.join(argv)}\n{said}"


def test_docs_show_commands() -> None:
    """The extractor finds the docs' commands (a broken extractor would pass everything)."""
    progs = [prog for _, _, prog, _ in COMMANDS]
    assert progs.count("ctdctl") >= 20 and progs.count("ctd") >= 3


def test_command_checker_catches_unknown_flags() -> None:
    """An unknown subcommand or option fails to parse; a known one with a sudo/env prefix parses."""
    line = "sudo -u ctd CTD_SOCKET=/run/ctd/ctd.sock /opt/ctd/bin/ctdctl indicators serch --x | head > out"
    [(prog, argv)] = list(docscan.ctd_invocations(line))
    assert (prog, argv) == ("ctdctl", ["indicators", "serch", "--x"])
    assert _parse(prog, argv)[0] == 2
    assert _parse("ctdctl", ["completion", "bash", "--json"])[0] == 2
    assert _parse("ctd", ["check-config", "--deeper"])[0] == 2
    [(prog, argv)] = list(docscan.ctd_invocations("python3 -m ctd run --once  # comment --bogus"))
    assert _parse(prog, argv)[0] == 0


def test_check_config_help_names_the_default_path() -> None:
    """``ctd check-config --help`` says which file it checks when given none."""
    code, said = _parse("ctd", ["check-config", "--help"])
    assert code == 0 and "$CTD_CONFIG" in said and "/etc/ctd/ctd.toml" in said


# --- reference completeness --------------------------------------------------------------


def _documented(page: str) -> str:
    return (ROOT / page).read_text()


def _fields(struct: type[msgspec.Struct]) -> set[str]:
    return set(struct.__struct_fields__)


@pytest.mark.parametrize(
    ("page", "struct", "skip"),
    [
        ("docs/configuration.md", DaemonConfig, set()),
        ("docs/configuration.md", AllowlistConfig, set()),
        ("docs/configuration.md", PluginConfig, {"options"}),
        ("docs/configuration.md", RuleConfig, set()),
        ("docs/configuration.md", SharingConfig, set()),
        ("docs/configuration.md", HttpOptions, set()),
    ],
    ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None,
)
def test_config_reference_names_every_key(page: str, struct: type[msgspec.Struct], skip: set[str]) -> None:
    """Every key of every core config table is documented in docs/configuration.md."""
    text = _documented(page)
    missing = sorted(k for k in _fields(struct) - skip if f"`{k}`" not in text)
    assert not missing, f"{page} does not document {missing}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_page_names_every_key_and_param(name: str) -> None:
    """Each adapter's page documents every key of its schema and every parameter of its actions."""
    cls = adapter_class(name)
    text = _documented(f"docs/adapters/{name}.md")
    keys = _fields(cls.Config) - {"resolved_tenant"}
    for f in msgspec.structs.fields(cls.Config):  # a [tenants.NAME] table the adapter binds is documented too
        if f.name == "resolved_tenant":
            keys |= _fields(next(a for a in getattr(f.type, "__args__", (f.type,)) if a is not type(None)))
    for action, spec in getattr(cls, "ACTIONS", {}).items():
        assert f"`{action}`" in text, f"docs/adapters/{name}.md does not name the action {action!r}"
        keys |= _fields(spec.params)
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/adapters/{name}.md does not document {missing}"


def _shadowed(name: str) -> list[str]:
    return sorted(_fields(adapter_class(name).Config) & (_fields(PluginConfig) - {"options"}))


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_keys_do_not_shadow_common_keys(name: str) -> None:
    """No adapter has a key that a common plugin key of the same name would take (it could never be set)."""
    assert not _shadowed(name), f"{name}: {_shadowed(name)} can never be set"


def test_misp_keys_do_not_shadow_common_keys() -> None:
    """The misp adapter's tag filter can be set: it is `filter_tags`, not the common `tags`."""
    assert not _shadowed("misp")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, p in subs[0].choices.items() for leaf in _leaves(p, (*path, name))]


def test_ctdctl_page_names_every_command_and_option() -> None:
    """docs/ctdctl.md has a table row for every ctdctl command, naming each of its options."""
    text = _documented("docs/ctdctl.md")
    globals_ = {"--json", "--socket", "--config", "--timeout", "--help", "-h"}
    for path, parser in _leaves(ctdctl_main.build_parser()):
        rows = [ln for ln in text.splitlines() if ln.startswith("|") and f"`ctdctl {' '.join(path)}" in ln]
        assert rows, f"docs/ctdctl.md has no row for `ctdctl {' '.join(path)}`"
        options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - globals_
        missing = sorted(o for o in options if not any(o in row for row in rows))
        assert not missing, f"`ctdctl {' '.join(path)}`: options {missing} not in its row"


# --- links and fences ----------------------------------------------------------------------

LINKS = [
    (path, n, target)
    for path in docscan.doc_files()
    for n, target in docscan.links(path)
    if not target.startswith(("http://", "https://", "mailto:"))
]


@pytest.mark.parametrize(("path", "line", "target"), LINKS, ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in LINKS])
def test_relative_link_resolves(path: Path, line: int, target: str) -> None:
    """Every relative link in the docs names an existing file, and its #anchor a heading there."""
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    where = f"{path.relative_to(ROOT)}:{line}: {target}"
    assert dest.exists(), f"{where}: no such file"
    assert ROOT in dest.parents or dest == ROOT, f"{where}: outside the repository"
    if anchor:
        assert dest.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
        assert anchor in docscan.anchors(dest), f"{where}: no heading with that anchor in {dest.name}"


def test_links_are_found() -> None:
    """The link checker sees the docs' links (a broken regex would pass everything)."""
    assert len(LINKS) >= 50


_REPO_PATH = re.compile(r"`((?:ctd|adapters|tests|bench|etc|systemd|docs)/[A-Za-z0-9_./-]*)`")


def test_repository_paths_named_in_the_docs_exist() -> None:
    """Every repository path the docs quote (`ctd/canon.py`, `adapters/http.py`...) exists (modules move)."""
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}:{n}: {m[1]}"
            for path in docscan.doc_files()
            for n, line in enumerate(path.read_text().splitlines(), 1)
            for m in _REPO_PATH.finditer(line)
            if "NAME" not in m[1] and not (ROOT / m[1]).exists()
        }
    )
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.where())
def test_fence_info_is_known(block: Block) -> None:
    """Every fenced block is one the docs test knows how to check (or plain text)."""
    assert block.lang in KNOWN_INFO, f"{block.where()}: unknown info string {block.info!r}"
    if block.lang != "toml":
        assert not block.options, f"{block.where()}: options {block.options} only mean something on toml"
