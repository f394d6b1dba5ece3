"""What the daemon imports is what pyproject.toml declares (issue 13: h11 was imported, not declared)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imported directly but installed by a declared dependency that pins its version;
# declaring it as well could only conflict with that pin.
PROVIDED_BY = {"antlr4": "stix2-patterns"}  # the ANTLR runtime stix2-patterns' generated grammar needs


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_canonical(re.findall(r"[A-Za-z0-9_.-]+", req)[0]) for req in project["dependencies"]}


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in [*(ROOT / "ctd").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"ctd"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """Each third-party module ctd or its adapters import comes from a runtime dependency in pyproject.toml."""
    declared = _runtime_dependencies()
    dists = packages_distributions()
    undeclared = []
    for module in sorted(_imported_top_level()):
        if module in PROVIDED_BY:
            assert _canonical(PROVIDED_BY[module]) in declared, module
            continue
        if not {_canonical(d) for d in dists.get(module, [])} & declared:
            undeclared.append(module)
    assert not undeclared, f"imported but not declared in [project].dependencies: {undeclared}"


def test_import_scan_sees_the_daemon_dependencies() -> None:
    """The scan finds the libraries the daemon is built on (it is not vacuous)."""
    assert {"trio", "httpx", "h11", "msgspec", "structlog", "ijson"} <= _imported_top_level()
