"""Reload inside a running daemon (in-process): only what changed is touched."""

from __future__ import annotations

import shutil

import pytest
import trio
import trio.testing

from ctd.config import load_config
from ctd.control.access import AccessPolicy
from ctd.control.commands import Commands
from ctd.daemon.daemon import Daemon
from ctd.errors import ActorStopped, ConfigError, NotFound
from ctd.service.sdnotify import Notifier
from tests.daemonproc import short_tmpdir
from tests.fake_adapters import Fakes, Script
from tests.inprocess import running


def write(path, slow_extra="", other_extra="", more=""):
    path.write_text(
        f'[daemon]\nstate_dir = "{path.parent}/var"\nsocket = "{path.parent}/ctd.sock"\n'
        f'[plugins.slow]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "reload-slow"\n{slow_extra}'
        f'[plugins.other]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "reload-other"\n{other_extra}'
        f"{more}"
    )


@pytest.fixture
def workdir():
    d = short_tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_unchanged_source_not_restarted(workdir):
    """Reload restarts a changed source but leaves an unchanged one and its in-flight pull alone."""
    fakes = Fakes()
    slow = fakes.scripts["reload-slow"] = Script(batches=[["a.example"], ["b.example"]])
    slow.gate = trio.Event()
    other = fakes.scripts["reload-other"] = Script()
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    async with running(cfg_path, fakes) as daemon:
        with trio.fail_after(20):  # guards only: a hang fails the test instead of blocking the suite
            await slow.in_pull.wait()  # "slow" is mid-pull, blocked after its first batch
            await other.wait_until(lambda: other.calls)
        write(cfg_path, other_extra="aging_days = 7\n")
        result = await daemon.reload()
        assert result["changed"] == ["other"] and result["unchanged"] == ["slow"]
        assert fakes.opened == {"slow": 1, "other": 2}  # "other" restarted, "slow" not
        assert slow.cancelled == 0
        slow.gate.set()
        with trio.fail_after(20):
            await slow.wait_until(lambda: slow.finished)
        assert len(slow.calls) == 1  # the same pull carried on to its end


def scripts(slow_batches=None):
    fakes = Fakes()
    fakes.scripts["reload-slow"] = Script(batches=slow_batches)
    fakes.scripts["reload-other"] = Script()
    return fakes


async def test_removed_source_is_cancelled(workdir):
    """A source removed from the config is stopped on reload."""
    fakes = scripts()
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    async with running(cfg_path, fakes) as daemon:
        cfg_path.write_text(cfg_path.read_text().split("[plugins.other]")[0])
        result = await daemon.reload()
        assert result["removed"] == ["other"]
        assert daemon.sources.names() == ["slow"]


async def test_invalid_reload_changes_nothing(workdir):
    """An invalid file raises ConfigError and leaves the running config and actors as they were."""
    fakes = scripts()
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    async with running(cfg_path, fakes) as daemon:
        before = daemon.config
        write(cfg_path, slow_extra="aging_days = 1000\n")
        with pytest.raises(ConfigError, match=r"\$\.plugins\.slow\.aging_days"):
            await daemon.reload()
        assert daemon.config is before
        assert fakes.opened == {"slow": 1, "other": 1}


async def test_allowlist_change_applies_without_restart(workdir):
    """Adding a domain to the allowlist deactivates stored matches without restarting sources."""
    fakes = scripts(slow_batches=[["x.blocked.example", "ok.example"]])
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    async with running(cfg_path, fakes) as daemon:
        await daemon.sync("slow")  # a whole pull of each, committed: the startup pulls' data is in
        await daemon.sync("other")
        assert (await daemon.store.counts())["active"] == 3
        write(cfg_path, more='[allowlist]\ndomains = ["blocked.example"]\n')
        await daemon.reload()
        [ind] = await daemon.store.show([("domain", "x.blocked.example")], "x")
        assert ind["allowlisted"] and not ind["active"]
        assert fakes.opened == {"slow": 1, "other": 1}


async def test_sync_in_flight_fails_when_reload_restarts_the_source(workdir):
    """`ctdctl sync` of a source that a reload restarts mid-pull gets an error instead of hanging (issue 11 #9)."""
    fakes = Fakes()
    slow = fakes.scripts["reload-slow"] = Script(batches=[["a.example"], ["b.example"]])
    slow.gate = trio.Event()
    fakes.scripts["reload-other"] = Script()
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    daemon = Daemon(load_config(cfg_path), Notifier(None), open_adapter=fakes.open_adapter)
    errors: list[str] = []

    async def sync():
        try:
            await daemon.sync("slow")
        except ActorStopped as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.run)
        with trio.fail_after(20):  # a guard only: a hang fails the test instead of blocking the suite
            await slow.in_pull.wait()  # the startup pull, held after its first batch
            async with trio.open_nursery() as asks:
                asks.start_soon(sync)  # queued behind the startup pull
                await trio.testing.wait_all_tasks_blocked()
                first, slow.gate, slow.in_pull = slow.gate, trio.Event(), trio.Event()
                first.set()
                await slow.in_pull.wait()  # the pull serving that sync, held: the request is in flight
                asks.start_soon(sync)  # and a second one queued behind it
                await trio.testing.wait_all_tasks_blocked()
                write(cfg_path, slow_extra="aging_days = 7\n")
                result = await daemon.reload()
        assert result["changed"] == ["slow"]
        assert len(errors) == 2 and all("source 'slow'" in e for e in errors)
        nursery.cancel_scope.cancel()


async def test_sync_or_share_of_an_unknown_name_is_not_found(workdir):
    """sync/share of a name that is not running raise NotFound (a bad request), also through the command handler."""
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    async with running(cfg_path, scripts()) as daemon:
        with pytest.raises(NotFound, match="^no pulling source named 'nope'$"):
            await daemon.sync("nope")
        with pytest.raises(NotFound, match="^no sharing configuration named 'nope'$"):
            await daemon.share("nope")
        with pytest.raises(NotFound, match=r"^no pulling source named 'nope' \(known: other, slow\)$"):
            await Commands(daemon, AccessPolicy(None, None)).sync({"source": "nope"})


async def test_a_request_while_the_daemon_starts_is_told_to_ask_again(workdir):
    """A control request that arrives before the store and actors exist gets ActorStopped, not an internal error."""
    cfg_path = workdir / "ctd.toml"
    write(cfg_path)
    commands = Commands(Daemon(load_config(cfg_path), Notifier(None)), AccessPolicy(None, None))
    for call in (commands.status, commands.list_sources):
        with pytest.raises(ActorStopped, match="^the daemon is still starting: ask again$"):
            await call({})
    with pytest.raises(ActorStopped, match="still starting"):
        await commands.sync({"source": "slow"})
