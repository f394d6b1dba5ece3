"""The store seam: the store API is the only way into the store, and no SQL lives outside ctd/store/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ctd.model import Sighting
from ctd.store import STAGE_COLUMNS, Store, api, engine, requests, to_stage_rows

ROOT = Path(__file__).resolve().parent.parent
# The SQLite backend; nothing outside ctd/store/ imports these.
PRIVATE = {f"ctd.store.{m}" for m in ("sql", "query", "ledger", "schema", "engine")}
# bench/ingest.py measures a bare-SQLite ceiling next to the pipeline, from the store's own DDL.
CEILING = {
    "bench/ingest.py": {"sqlite3", "ctd.store.schema"},
    "bench/latency.py": {"sqlite3"},
    "bench/benchjson.py": {"sqlite3"},  # names the SQLite version beside every benchmark's figures
}


def modules(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it runs (imports under ``if TYPE_CHECKING:`` do not count)."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("path", modules("ctd", "adapters", "bench"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_store_touches_sqlite(path):
    """Outside ctd/store/ no module imports sqlite3 or the store's SQLite backend modules."""
    rel = str(path.relative_to(ROOT))
    if rel.startswith("ctd/store/"):
        return
    bad = {m for m in runtime_imports(path) if m == "sqlite3" or m in PRIVATE} - CEILING.get(rel, set())
    assert not bad, f"{rel} imports {sorted(bad)}: go through ctd.store's API"


SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TEMP\s+)?TABLE|PRAGMA\s+\w+)\b"
    r"|\bi\.(active|type|value|last_seen|tags)\b",
    re.S,
)
# The rule compiler turns a parsed rule into SQLite's dialect; only ctd/store/ calls it.
# bench/latency.py reads the daemon's database read-only, to see when a source's batch committed.
SQL_ALLOWED = ("ctd/store/", "ctd/rules/compiler.py", "bench/ingest.py", "bench/latency.py")


@pytest.mark.parametrize("path", modules("ctd", "adapters", "bench"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_text_outside_the_store(path):
    """No string in code outside ctd/store/ (and the rule compiler) is SQL."""
    rel = str(path.relative_to(ROOT))
    if rel.startswith(SQL_ALLOWED):
        return
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = [
        n.value[:80]
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings and SQL.search(n.value)
    ]
    assert not found, f"{rel} holds SQL: {found}"


def test_the_sqlite_backend_handles_every_request():
    """engine.execute has a case for every request type of the store API, and fails loudly on anything else."""
    kinds = {c.__name__ for c in _subclasses(requests._Request)}
    tree = ast.parse(Path(engine.__file__).read_text())
    cases = {
        p.cls.id
        for n in ast.walk(tree)
        if isinstance(n, ast.match_case)
        for p in ast.walk(n.pattern)
        if isinstance(p, ast.MatchClass) and isinstance(p.cls, ast.Name)
    }
    assert kinds and kinds == cases
    with pytest.raises(AssertionError, match="does not know"):
        engine.execute(None, object())  # type: ignore[arg-type]


def test_every_request_has_a_named_store_method():
    """Each request type is built by exactly one named Store method (no request is reachable only raw)."""
    source = Path(api.__file__).read_text()
    store_part = source[source.index("class Store(abc.ABC)") :]
    for cls in _subclasses(requests._Request):
        built = len(re.findall(rf"\b{cls.__name__}\(", store_part))
        passed = re.search(rf"\w+: {cls.__name__}\)", store_part) is not None  # ingest(batch: IngestBatch)
        assert built + passed == 1, cls.__name__


def test_stage_row_follows_stage_columns():
    """to_stage_rows builds each row in STAGE_COLUMNS order, the order the store stages it in."""
    sighting = Sighting(
        type="domain",
        value="x.example",
        first_seen=10,
        last_seen=20,
        reputation=7,
        severity="high",
        tags=("b", "a"),
        comments="c",
        reference="r",
        expires_at=30,
        retracted=True,
    )
    [row] = to_stage_rows(
        [sighting],
        now=99,
        reputation=None,
        extra_tags=(),
        allowlisted=lambda t, v: True,
        warninglisted=lambda t, v: "tranco10k",
    )
    assert dict(zip(STAGE_COLUMNS, row, strict=True)) == {
        "type": "domain",
        "value": "x.example",
        "first_seen": 10,
        "last_seen": 20,
        "reputation": 7,
        "severity": 3,
        "tags": '["a","b"]',
        "comments": "c",
        "reference": "r",
        "expires_at": 30,
        "retracted": 1,
        "allowlisted": 1,
        "warninglist": "tranco10k",
        "wl_hold": 1,
    }


def test_stage_row_warninglist_tag_action():
    """Under warninglist_action = "tag" a hit is staged with its tag and not held; a miss is neither."""
    hit, miss = Sighting(type="domain", value="a.example", tags=("z",)), Sighting(type="domain", value="b.example")
    rows = to_stage_rows(
        [hit, miss],
        now=99,
        reputation=None,
        extra_tags=(),
        allowlisted=None,
        warninglisted=lambda t, v: "tranco10k" if v == "a.example" else None,
        warninglist_tag=True,
    )
    got = [dict(zip(STAGE_COLUMNS, row, strict=True)) for row in rows]
    assert [(r["tags"], r["warninglist"], r["wl_hold"]) for r in got] == [
        ('["warninglist:tranco10k","z"]', "tranco10k", 0),
        ("[]", "", 0),
    ]


def test_a_backend_is_a_store_subclass_with_three_methods():
    """A second backend implements _execute, statistics and engine_versions; nothing else is abstract."""
    assert Store.__abstractmethods__ == {"_execute", "statistics", "engine_versions"}


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out
