"""Import directions of the house, read from the source with ``ast`` (every import counts, also inside
functions and under ``TYPE_CHECKING``).

* adapters import the modules of ``ADAPTER_TOOLKIT`` below (the contract ``ctd.model``, the shared layer at
  the top of ``adapters/``) and their own package; an adapter built on another's pure code says so in
  ``CROSS_ADAPTER`` below;
* the core never imports an adapter package (it finds adapter classes through ``ctd.plugins``);
* only ``ctd/store/`` touches SQLite;
* nothing imports ``ctd.daemon`` but the CLI (``ctd/cli.py``); the control package in particular does not;
* ``ctdctl`` (the client) imports the wire format ``ctd.control.protocol``, its own package and leaf modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What any adapter module may import of ctd besides its own package, and why.
ADAPTER_TOOLKIT: dict[str, str] = {
    "ctd.model": "the adapter contract, with what it re-exports (canonicalisation, the error tree)",
    "ctd.adapters.http": "the shared HTTP layer: client, redirect policy, response caps, error mapping",
    "ctd.adapters.jsonstream": "the incremental JSON parser with its caps, for bodies too large to decode whole",
    "ctd.adapters.tenant": "the config hooks of an adapter connected through a [tenants.NAME] table",
    # The control socket needs it too, and the core never imports an adapter module: so it is a core leaf
    # module (it imports nothing of ctd), not part of the adapters' shared layer.
    "ctd.accept": "accepting connections with a back-off when out of descriptors, and rate-limited logging",
}

# (adapter package, adapter package it builds on) and why.
CROSS_ADAPTER: dict[tuple[str, str], str] = {
    ("feed", "file"): "a feed's text/CSV records are parsed as the file adapter parses them",
    ("feed", "misp"): "the MISP feed format maps attributes with the misp adapter's one type table",
    ("edl", "file"): "an EDL list is rendered and written as the file adapter writes a list",
    # adapters/web is not an adapter but the shared package of the web adapters (extraction, main text,
    # fetching, PDF); it reads bodies with the feed adapter's capped, piecewise-decompressing reader.
    ("rss", "web"): "the rss adapter extracts indicators and reads articles with the shared web package",
    ("webpage", "web"): "the webpage adapter fetches pages and extracts indicators with the shared web package",
    ("web", "feed"): "pages are read with the feed adapter's capped body reader (Content-Encoding, max_bytes)",
}

# Modules outside the store that still reach into its SQL layer (none: the store seam is typed).
STORE_SEAM_PENDING: frozenset[str] = frozenset()

# The store's public face: the Store API, its request Structs, the stage rows and the actor's client.
# Every other module of ctd/store is the SQLite backend.
STORE_FACE = frozenset({"ctd.store", "ctd.store.actor", "ctd.store.api", "ctd.store.requests", "ctd.store.rows"})

# What the ctdctl client may import of ctd besides its own package.
CTDCTL_ALLOWED = frozenset({"ctd", "ctd.control.protocol", "ctd.errors", "ctd.model"})


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "adapters":
        parts = ["ctd", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def sources() -> dict[str, Path]:
    files = [*(REPO / "ctd").rglob("*.py"), *(REPO / "adapters").rglob("*.py")]
    return {_module_name(p): p for p in files}


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    path = sources()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in sources() else base)
    return frozenset(out)


def ctd_imports(module: str) -> set[str]:
    return {m for m in imports(module) if m == "ctd" or m.startswith("ctd.")}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def adapter_package(module: str) -> str | None:
    """``feed`` for ``ctd.adapters.feed.misp``; None for the shared modules at the top of ``adapters/``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 or (len(parts) == 3 and (sources()[module].name == "__init__.py")) else None


def test_adapters_import_only_the_contract_the_http_layer_and_their_own_package():
    """An adapter module imports ADAPTER_TOOLKIT modules and its own package (plus declared cross-adapter use)."""
    bad = []
    for module in sources():
        if not within(module, "ctd.adapters") or module == "ctd.adapters":
            continue
        own = adapter_package(module)
        for imp in ctd_imports(module):
            if imp in ADAPTER_TOOLKIT or (own and within(imp, f"ctd.adapters.{own}")):
                continue
            if module == "ctd.adapters.http" and imp == "ctd":  # the version in the User-Agent
                continue
            other = adapter_package(imp) if within(imp, "ctd.adapters") and imp in sources() else None
            if own and other and (own, other) in CROSS_ADAPTER:
                continue
            bad.append(f"{module} imports {imp}")
    assert bad == []


def test_accept_is_a_leaf_module():
    """ctd.accept, which adapters may import, is a leaf: it cannot pull the core into an adapter."""
    assert ctd_imports("ctd.accept") == set()


def test_the_core_never_imports_an_adapter_package():
    """No module of ctd/ outside adapters/ imports ctd.adapters (adapter classes come from ctd.plugins)."""
    bad = [
        f"{m} imports {i}"
        for m in sources()
        if not within(m, "ctd.adapters")
        for i in ctd_imports(m)
        if within(i, "ctd.adapters")
    ]
    assert bad == []


def test_nothing_imports_the_daemon_but_the_cli():
    """Only ctd.cli (and the daemon package itself) imports ctd.daemon."""
    bad = [
        f"{m} imports {i}"
        for m in sources()
        if m != "ctd.cli" and not within(m, "ctd.daemon")
        for i in ctd_imports(m)
        if within(i, "ctd.daemon")
    ]
    assert bad == []


def test_ctdctl_imports_the_wire_format_and_leaf_modules_only():
    """The ctdctl client imports ctd.control.protocol, its own package and leaf modules (errors, model, version)."""
    bad = [
        f"{m} imports {i}"
        for m in sources()
        if within(m, "ctd.ctdctl")
        for i in ctd_imports(m)
        if not within(i, "ctd.ctdctl") and i not in CTDCTL_ALLOWED
    ]
    assert bad == []


def test_only_the_store_touches_sqlite():
    """Outside ctd/store/, no module imports sqlite3 or a store module other than its public face (the SQL layer)."""
    sql_layer = {m for m in sources() if within(m, "ctd.store")} - STORE_FACE
    offenders = {
        m for m in sources() if not within(m, "ctd.store") and ("sqlite3" in imports(m) or imports(m) & sql_layer)
    }
    assert offenders - STORE_SEAM_PENDING == set(), "new modules reach into SQLite"
    assert STORE_SEAM_PENDING - offenders == set(), "these no longer touch SQLite: remove them from STORE_SEAM_PENDING"


def test_every_ctd_import_names_a_module_or_a_name_in_one():
    """Every ``ctd.*`` import resolves to a module of the tree (a stale path after a move fails here)."""
    bad = [f"{m} imports {i}" for m in sources() for i in ctd_imports(m) if i not in sources()]
    assert bad == []


def test_every_module_imports_on_its_own():
    """Each module imports first in a fresh set of ctd modules (no import cycle that only works in one order)."""
    script = (
        "import importlib, sys\n"
        f"names = {sorted(m for m in sources() if not m.endswith('__main__'))!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'ctd' or m.startswith('ctd.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_the_daemon_does_not_import_the_command_handlers():
    """ctd.daemon gets its command handler from the CLI: no import cycle between daemon and control commands."""
    bad = [
        f"{m} imports {i}"
        for m in sources()
        if within(m, "ctd.daemon")
        for i in ctd_imports(m)
        if i.startswith("ctd.control.commands")
    ]
    assert bad == []
