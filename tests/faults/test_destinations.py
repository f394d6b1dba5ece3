"""Fault injection, destinations: the real daemon killed mid-delivery, and destinations that misbehave.

After each fault the invariants hold: destination = selection, ledger = destination, nothing sent
twice on purpose (only the batch in flight at a kill may be sent again: at least once), the daemon up.
``CTD_FAULT_SEED`` picks the random kill points (printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.daemonproc import DaemonProc, short_tmpdir, wait_for
from tests.emulators.netskope import NetskopeTenant, serve_on_localhost
from tests.faults.dest_helpers import (
    daemon_up,
    dropping_server,
    hanging_server,
    kill,
    ledger,
    read,
    refusing_url,
    shared,
)

SEED = int(os.environ.get("CTD_FAULT_SEED") or time.time_ns() % 100_000)
PLACEHOLDER = "cedefaultpush.io"
LIST = "ctd-blocked"


def urls(n: int, start: int = 0) -> list[str]:
    return [f"http://h{i}.fault.example/" for i in range(start, start + n)]


def tenant(name: str, base: str, d: DaemonProc) -> str:
    (d.dir / "token").write_text("v2-secret\n")
    return f'[tenants.{name}]\nurl = "{base}"\ntoken_file = "{d.dir}/token"\n'


def netskope_sharing(name: str, plugin: str, tenant_name: str, timeout: str = "10s") -> str:
    return f"""
[plugins.{plugin}]
adapter = "netskope"
tenant = "{tenant_name}"
pull = false
timeout = "{timeout}"
[sharing.{name}]
sources = ["src"]
rule = "urls"
destination = "{plugin}"
action = "url_list"
params = {{ list = "{LIST}" }}
interval = "1h"
"""


SOURCE = """
[plugins.src]
adapter = "file"
path = "src.txt"
sync_interval = "1h"
[rules.urls]
filter = "type = url"
"""


@pytest.fixture
def daemon() -> Iterator[DaemonProc]:
    d = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    yield d
    d.cleanup()


def write_source(d: DaemonProc, values: list[str]) -> None:
    tmp = d.dir / "src.txt.new"
    tmp.write_text("".join(v + "\n" for v in values))
    tmp.replace(d.dir / "src.txt")  # atomically, as the file adapter asks of producers


def deployed(emu: NetskopeTenant) -> set[str]:
    return set(emu.list_values(LIST) or []) - {PLACEHOLDER}


def settled(d: DaemonProc, emu: NetskopeTenant, selection: set[str], sharing: str = "to-ns") -> bool:
    """destination = selection, ledger = destination, nothing owed."""
    states = ledger(d, sharing)
    live = {v for v, st in states.items() if st in ("shared", "pending", "pending+staged", "retract_pending+staged")}
    return deployed(emu) == selection and shared(d, sharing) == selection and live == selection


# --- SIGKILL at chosen and random points of an incremental delivery ----------------------------------


class KillAt:
    """A Netskope fault hook: SIGKILL the daemon at the n-th request matching ``what``, before or after
    the tenant handled it. Remembers the values of the request in flight."""

    def __init__(self, d: DaemonProc, what: Callable[[httpx.Request], bool], nth: int, after: bool) -> None:
        self.d, self.what, self.nth, self.after = d, what, nth, after
        self.seen = 0
        self.fired = False
        self.in_flight: set[str] = set()

    def _hit(self, request: httpx.Request) -> bool:
        if self.fired or not self.what(request):
            return False
        self.seen += 1
        if self.seen < self.nth:
            return False
        self.fired = True
        if request.content:
            self.in_flight = set(json.loads(request.content).get("data", {}).get("urls", []))
        assert self.d.proc is not None
        self.d.proc.kill()
        return True

    def before(self, request: httpx.Request) -> int | None:
        return 503 if not self.after and self._hit(request) else None

    def after_hook(self, request: httpx.Request, status: int) -> None:
        if self.after:
            self._hit(request)


def is_append(r: httpx.Request) -> bool:
    return r.method == "PATCH" and r.url.path.endswith("/append")


def is_replace(r: httpx.Request) -> bool:
    return r.method == "PATCH" and r.url.path.endswith("/replace")


def is_deploy(r: httpx.Request) -> bool:
    return r.method == "POST" and r.url.path.endswith("/deploy")


def start_and_settle(d: DaemonProc, emu: NetskopeTenant, selection: set[str]) -> None:
    d.start().wait_ready()
    wait_for(lambda: settled(d, emu, selection), lambda: f"settled ledger/tenant:\n{d.log.read_text()[-3000:]}", 60)


def killed(d: DaemonProc, hook: KillAt) -> None:
    wait_for(lambda: hook.fired and d.proc is not None and d.proc.poll() is not None, "the daemon to be killed", 60)
    kill(d)


def check_duplicates(emu: NetskopeTenant, allowed: set[str], ctx: str) -> None:
    """Nothing appended twice, except the batch a kill interrupted after the tenant took it."""
    dups = {v for v, n in Counter(emu.appended).items() if n > 1}
    assert dups <= allowed, f"{ctx}: sent twice: {sorted(dups)[:5]}"


N = 25_000  # three append batches of 10,000


@pytest.mark.parametrize("path", ["push", "withdraw"])
def test_sigkill_at_a_random_point_of_a_delivery_and_its_apply(daemon, path):
    """SIGKILL at a random request of a push or a withdrawal (append/replace k, or the deploy; before or
    after the tenant handled it): after a restart destination = selection = ledger, nothing sent twice."""
    rng = random.Random(f"{SEED}-{path}")
    step = rng.choice(["deliver", "deploy"])
    after = rng.random() < 0.5
    nth = rng.randint(1, 3) if (path, step) == ("push", "deliver") else 1
    ctx = f"seed={SEED} path={path} step={step} nth={nth} after={after}"
    emu = NetskopeTenant()
    d = daemon
    with serve_on_localhost(emu) as base:
        d.write_config(tenant("prod", base, d) + SOURCE + netskope_sharing("to-ns", "ns", "prod"))
        values = urls(N)
        write_source(d, values)
        selection = set(values)
        if path == "withdraw":
            start_and_settle(d, emu, selection)
            selection = set(values[: N - 3000])
        which = {"deliver": is_append if path == "push" else is_replace, "deploy": is_deploy}[step]
        hook = KillAt(d, which, nth, after)
        emu.before, emu.after = hook.before, hook.after_hook
        if path == "withdraw":
            write_source(d, sorted(selection))
            d.ctl_rc("sync", "src")  # the pull wakes the sharing; the hook kills the daemon in its pass
        else:
            d.start()
        killed(d, hook)
        if path == "withdraw" and step == "deliver" and not after:
            assert deployed(emu) == set(values), ctx  # the tenant still blocks all: nothing was recorded
        emu.before = emu.after = None
        start_and_settle(d, emu, selection)
        check_duplicates(emu, hook.in_flight if after else set(), ctx)
        assert daemon_up(d), ctx
        assert d.stop() == 0


def test_sigkill_between_replace_and_deploy_then_restart_deploys(daemon):
    """Killed after the withdrawal's replace, during its deploy: the ledger is not `retracted`; after a restart
    only the deploy runs (no second replace) and the ledger matches the tenant's deployed list."""
    emu = NetskopeTenant()
    d = daemon
    with serve_on_localhost(emu) as base:
        d.write_config(tenant("prod", base, d) + SOURCE + netskope_sharing("to-ns", "ns", "prod"))
        values = urls(3)
        write_source(d, values)
        start_and_settle(d, emu, set(values))
        hook = KillAt(d, is_deploy, 1, after=False)
        emu.before = hook.before
        write_source(d, values[:2])
        d.ctl_rc("sync", "src")
        killed(d, hook)
        gone = values[2]
        assert gone in deployed(emu) and gone not in emu.url_list(LIST).urls  # replaced, not deployed
        assert ledger(d, "to-ns")[gone] == "retract_pending+staged"
        emu.before = None
        patches = len(emu.calls("PATCH"))
        start_and_settle(d, emu, set(values[:2]))
        assert ledger(d, "to-ns")[gone] == "retracted" and len(emu.calls("PATCH")) == patches
        assert d.stop() == 0


# --- destinations that misbehave ------------------------------------------------------------------------


def test_destinations_answering_5xx_429_hanging_refusing_and_dropping(daemon):
    """Five destinations at once: 503 then OK, 429 then OK, a server that never answers, a refused port, one
    that drops connections. The daemon stays up; during the 429's backoff `ctdctl sharing sync` answers at
    once (exit 2, the next attempt) and sends nothing; the recovering ones end destination = selection =
    ledger (each value sent once); the broken ones have nothing recorded as shared and a clear error."""
    d = daemon
    ok503, ok429 = NetskopeTenant(), NetskopeTenant()
    ok503.fail_next = [503]
    ok429.fail_next = [429]
    ok429.rate_reset = 3
    with (
        serve_on_localhost(ok503) as b503,
        serve_on_localhost(ok429) as b429,
        hanging_server() as bhang,
        refusing_url() as brefuse,
        dropping_server() as bdrop,
    ):
        cfg = SOURCE
        for name, base in (("t503", b503), ("t429", b429), ("thang", bhang), ("trefuse", brefuse), ("tdrop", bdrop)):
            cfg += tenant(name, base, d) + netskope_sharing(f"to-{name}", f"ns-{name}", name, timeout="2s")
        d.write_config(cfg)
        values = urls(50)
        write_source(d, values)
        d.start().wait_ready()
        state = lambda name: {s["name"]: s for s in d.ctl_json("sharing", "list")}[name]  # noqa: E731
        wait_for(lambda: ok429.requests and state("to-t429")["state"] == "backoff", "the 429 backoff")
        before = len(ok429.requests)
        r = d.ctl("sharing", "sync", "to-t429")
        assert r.returncode == 2 and "backoff" in r.stderr and "next attempt at" in r.stderr, r.stderr
        assert len(ok429.requests) == before  # the floor: nothing sent
        selection = set(values)
        wait_for(
            lambda: settled(d, ok503, selection, "to-t503") and settled(d, ok429, selection, "to-t429"),
            lambda: "recovery from 503 and 429:\n" + d.log.read_text()[-3000:],
            90,
        )
        for emu in (ok503, ok429):
            assert Counter(emu.appended) == Counter(values)  # each value sent once
        assert daemon_up(d)
        expect = {"to-thang": "timed out", "to-trefuse": "Connection refused", "to-tdrop": "list URL lists"}
        for name, words in expect.items():
            st = state(name)
            assert shared(d, name) == set(), name
            assert st["state"] in ("backoff", "sharing") and words in (st["last_error"] or ""), st
        rows = read(d, "SELECT count(*) FROM delivery WHERE state = 'shared'")
        assert rows[0][0] == 2 * len(values)
        assert d.stop() == 0


# --- SIGKILL during a full-list write ----------------------------------------------------------------------


def test_sigkill_during_a_full_list_write_leaves_a_whole_list_and_no_temp_file(daemon):
    """Killed half-way through writing a list file (at a random line): the old list stays whole; after a
    restart the leftover `.ctd-*` file is gone and the new list is written whole."""
    d = daemon
    rng = random.Random(f"{SEED}-write")
    out = d.dir / "lists" / "urls.txt"
    pause = d.dir / "pause"
    old, new = urls(2000), urls(6000)
    at = rng.randint(1, len(new) - 1)
    d.write_config(
        SOURCE
        + f"""
[plugins.lists]
adapter = "tests.faults.slow_adapters:PausingList"
pull = false
pause_file = "{pause}"
pause_after = {at}
[sharing.to-file]
sources = ["src"]
rule = "urls"
destination = "lists"
action = "write"
params = {{ path = "{out}" }}
"""
    )
    write_source(d, old)
    d.start().wait_ready()
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == len(old), "the first list")
    pause.touch()
    write_source(d, new)
    d.ctl_rc("sync", "src")
    temp = lambda: [p for p in out.parent.iterdir() if p.name.startswith(".ctd-")]  # noqa: E731
    wait_for(temp, "the write to be under way")
    kill(d)
    assert sorted(out.read_text().splitlines()) == sorted(old), f"seed={SEED} at={at}"  # whole: the old list
    assert temp(), "the killed write left its temporary file"
    pause.unlink()
    d.start().wait_ready()
    wait_for(
        lambda: not temp() and sorted(out.read_text().splitlines()) == sorted(new) and shared(d, "to-file") == set(new),
        "the new list, written and recorded",
        60,
    )
    assert daemon_up(d)
    assert d.stop() == 0
    assert [p.name for p in Path(out.parent).iterdir()] == ["urls.txt"]
