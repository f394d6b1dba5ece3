"""The corpus of real published feed formats (tests/corpus/), each pulled end to end.

Every directory under ``tests/corpus/`` is one case: a sample in a publisher's
real format, the plugin keys that read it (``plugin.toml``) and the IoC set a
person wrote down by hand (``expected.txt``). The sample is served over
loopback (a static HTTP server for feeds and MISP feeds, the OASIS TAXII
server medallion for STIX bundles), ``ctd run --once`` pulls it through the
real adapter into a real store, and the stored set is compared exactly.

``expected.txt``: one ``TYPE VALUE [STATE]`` per line, canonical form, ``#``
comments. STATE is omitted for an IoC that must be active right after ingest
with an expiry counted from that ingest (``aging_days`` after now, or none),
``inactive`` for one that must be stored but not active (revoked, expired by
its own ``valid_until``), ``expires=ISO8601`` for an explicit expiry from the
source. ``@NAME N`` lines compare the ``NAME=N`` figure of the pull summary
(``@invalid 0``: nothing was counted as an invalid record).

A case that reproduces a known bug is marked xfail (strict) in ``XFAIL``
below, naming the bug; the fix removes the mark (issue 12's marks are all
gone). The corpus README names where each format comes from.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w

from tests.daemonproc import REPO, env, stop_process
from tests.medallion_server import PASSWORD, USER, Coll, Medallion, medallion

CORPUS = Path(__file__).parent / "corpus"
PLUGIN = "corpus"
DEFAULT_AGING_DAYS = 90

# case -> why it fails today. Remove an entry when its fix lands (strict xfail turns a pass into a failure).
XFAIL: dict[str, str] = {}


# --------------------------------------------------------------------------- cases


@dataclass
class Expected:
    iocs: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, value) -> state
    counts: dict[str, int] = field(default_factory=dict)


def read_expected(path: Path) -> Expected:
    out = Expected()
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            name, num = line[1:].split()
            out.counts[name] = int(num)
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{path}:{n}: want 'TYPE VALUE [STATE]', got {raw!r}")
        state = parts[2] if len(parts) == 3 else "active"
        if state not in ("active", "inactive") and not state.startswith("expires="):
            raise ValueError(f"{path}:{n}: unknown state {state!r}")
        key = (parts[0], parts[1])
        if key in out.iocs:
            raise ValueError(f"{path}:{n}: {key} listed twice")
        out.iocs[key] = state
    return out


def cases() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if (p / "plugin.toml").is_file())


def plugin_keys(case: str) -> dict:
    return tomllib.loads((CORPUS / case / "plugin.toml").read_text())


def collection_id(case: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ctd:corpus:{case}"))


# --------------------------------------------------------------------------- servers


@dataclass
class StaticServer:
    base: str
    proc: subprocess.Popen


def _no_proxy_env() -> dict[str, str]:
    e = env(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def static_server(tmp_path_factory) -> Iterator[StaticServer]:
    """Python's http.server serving tests/corpus on a free loopback port (Last-Modified, conditional GET)."""
    log = open(tmp_path_factory.mktemp("http") / "http.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(CORPUS)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=_no_proxy_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()  # printed once the socket is bound
        m = re.search(r"port (\d+)", first)
        assert m, f"http.server did not start: {first!r}"
        yield StaticServer(f"http://127.0.0.1:{m.group(1)}", proc)
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


class BundleColl(Coll):
    """A collection holding a whole bundle: SCOs have no created/modified, so their version is the date added."""

    def resource(self) -> dict:
        res = super().resource()
        for entry, (_, added) in zip(res["manifest"], self.objects, strict=True):
            entry["version"] = entry["version"] or added
        return res


@pytest.fixture(scope="module")
def taxii_server(tmp_path_factory) -> Iterator[Medallion]:
    """medallion with one collection per TAXII case, seeded with that case's bundle.json."""
    added = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    colls: list[Coll] = []
    for case in cases():
        if plugin_keys(case).get("adapter") != "taxii":
            continue
        objects = json.loads((CORPUS / case / "bundle.json").read_text())["objects"]
        stamp = lambda i: (added + dt.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
        colls.append(BundleColl(collection_id(case), case, objects=[(o, stamp(i)) for i, o in enumerate(objects)]))
    with medallion(tmp_path_factory.mktemp("medallion"), {"api1": (10_485_760, colls)}, max_page_size=50) as m:
        yield m


# --------------------------------------------------------------------------- running ctd


@dataclass
class Pull:
    rc: int
    output: str
    summary: dict[str, int]
    rows: dict[tuple[str, str], tuple[int, int | None]]  # (type, value) -> (active, expires_at)
    rejected: list[str]


def _config(case: str, keys: dict, state_dir: Path, request) -> str:
    text = (CORPUS / case / "plugin.toml").read_text()
    if keys.get("adapter") == "taxii":
        server: Medallion = request.getfixturevalue("taxii_server")
        text = (
            text.replace("@TAXII@", server.discovery)
            .replace("@USER@", USER)
            .replace("@PASSWORD@", PASSWORD)
            .replace("@COLLECTION@", collection_id(case))
        )
    else:
        static: StaticServer = request.getfixturevalue("static_server")
        text = text.replace("@BASE@", f"{static.base}/{case}")
    text = text.replace("@DIR@", str(CORPUS / case))
    plugin = tomllib.loads(text)
    return tomli_w.dumps(
        {
            "daemon": {"state_dir": str(state_dir / "var"), "socket": str(state_dir / "ctd.sock")},
            "plugins": {PLUGIN: plugin},
        }
    )


def run_once(case: str, workdir: Path, request) -> Pull:
    keys = plugin_keys(case)
    cfg = workdir / "ctd.toml"
    cfg.write_text(_config(case, keys, workdir, request))
    r = subprocess.run(
        [sys.executable, "-m", "ctd", "run", "--once", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_no_proxy_env(),
        timeout=180,
    )
    output = r.stdout + r.stderr
    summary: dict[str, int] = {}
    for line in r.stdout.splitlines():
        if line.startswith(f"{PLUGIN}: "):
            summary = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    rejected = []
    for line in r.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("ctd_event") == "indicators_rejected_invalid":
            rejected += event.get("examples", [])
    rows: dict[tuple[str, str], tuple[int, int | None]] = {}
    db = workdir / "var" / "ctd.db"
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for type_, value, active, expires in conn.execute("SELECT type, value, active, expires_at FROM indicator"):
                rows[(type_, value)] = (active, expires)
        finally:
            conn.close()
    return Pull(r.returncode, output, summary, rows, rejected)


def _epoch(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def check(case: str, pull: Pull, want: Expected, ingest_start: int) -> list[str]:
    """Every difference between what ctd stored and what the case expects, as readable lines."""
    problems = []
    if pull.rc != 0 or not pull.summary:
        problems.append(f"ctd run --once exited {pull.rc}:\n{pull.output[-3000:]}")
    got, exp = set(pull.rows), set(want.iocs)
    problems += [f"missing:    {t} {v}" for t, v in sorted(exp - got)]
    problems += [f"unexpected: {t} {v}" for t, v in sorted(got - exp)]
    aging = int(plugin_keys(case).get("aging_days", DEFAULT_AGING_DAYS))
    for key in sorted(exp & got):
        state, (active, expires) = want.iocs[key], pull.rows[key]
        what = f"{key[0]} {key[1]}"
        if state == "inactive":
            if active:
                problems.append(f"active, expected inactive: {what}")
        elif not active:
            problems.append(f"inactive right after ingest: {what} (expires_at={expires})")
        elif state.startswith("expires="):
            if expires != _epoch(state.removeprefix("expires=")):
                problems.append(f"expiry {expires}, expected {state}: {what}")
        elif aging and expires is not None and expires < ingest_start + aging * 86400:
            problems.append(f"expiry {expires} not counted from this ingest ({ingest_start} + {aging}d): {what}")
    for name, n in want.counts.items():
        if name not in pull.summary:
            problems.append(f"the pull summary has no {name}= figure (want {n})")
        elif pull.summary[name] != n:
            problems.append(f"{name}={pull.summary[name]}, expected {n}")
    if problems and pull.rejected:
        problems.append("rejections reported: " + "; ".join(pull.rejected[:10]))
    return problems


def _params() -> list:
    return [
        pytest.param(c, id=c, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[c])] if c in XFAIL else [])
        for c in cases()
    ]


@pytest.mark.parametrize("case", _params())
def test_corpus_case(case: str, tmp_path: Path, request) -> None:
    """The sample, pulled by the real adapter over loopback into the real store, gives exactly the expected IoCs."""
    want = read_expected(CORPUS / case / "expected.txt")
    ingest_start = int(time.time())
    pull = run_once(case, tmp_path, request)
    problems = check(case, pull, want, ingest_start)
    assert not problems, f"{case}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_is_complete_and_documented() -> None:
    """Each case has a sample, plugin keys, a sorted hand-written expected set and a README line with its source."""
    readme = (CORPUS / "README.md").read_text()
    names = cases()
    assert len(names) >= 20
    assert set(XFAIL) <= set(names), sorted(set(XFAIL) - set(names))
    for case in names:
        d = CORPUS / case
        samples = [p for p in d.iterdir() if p.name not in ("plugin.toml", "expected.txt")]
        assert samples, f"{case}: no sample file"
        want = read_expected(d / "expected.txt")
        assert want.iocs, f"{case}: empty expected set"
        lines = [
            ln.split()[:2]
            for ln in (d / "expected.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith(("#", "@"))
        ]
        assert lines == sorted(lines), f"{case}: expected.txt is not sorted"
        assert re.search(rf"^\| `{re.escape(case)}` \|.*https?://", readme, re.M), (
            f"{case}: no README row with a source"
        )


def test_plugin_keys_validate() -> None:
    """Every case's plugin.toml is a valid [plugins.X] table for ctd's config (with placeholders filled)."""
    from ctd.config import parse_config

    for case in cases():
        text = (CORPUS / case / "plugin.toml").read_text()
        for token, val in (
            ("@BASE@", "http://127.0.0.1:1/x"),
            ("@TAXII@", "http://127.0.0.1:1/taxii2/"),
            ("@USER@", "u"),
            ("@PASSWORD@", "p"),
            ("@COLLECTION@", collection_id(case)),
            ("@DIR@", str(CORPUS / case)),
        ):
            text = text.replace(token, val)
        parse_config(tomli_w.dumps({"plugins": {PLUGIN: tomllib.loads(text)}}))
    assert os.path.isdir(CORPUS)
