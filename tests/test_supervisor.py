"""An actor that fails with an exception never ends the daemon (issue 11: no exception ends the daemon)."""

from __future__ import annotations

import shutil
from typing import Any, ClassVar

import pytest
import trio

from ctd.errors import ActorStopped
from ctd.model import Adapter
from tests.daemonproc import short_tmpdir
from tests.fake_adapters import Fakes, Script
from tests.inprocess import running


class Unbuildable(Adapter):
    """A source whose adapter cannot even be built (a bug, a library that fails on import of a resource)."""

    can_pull: ClassVar[bool] = True
    built = 0

    def __init__(self, name: str, config: Any, client: Any = None) -> None:
        type(self).built += 1
        raise RuntimeError("cannot build this adapter")


@pytest.fixture
def workdir():
    d = short_tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_a_source_that_cannot_start_does_not_end_the_daemon(workdir):
    """The daemon starts without the failed source, shows it failed with its error, and a reload retries it."""
    fakes = Fakes()
    good = fakes.scripts["good"] = Script(batches=[["a.example"]])
    cfg = workdir / "ctd.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{workdir}/var"\nsocket = "{workdir}/ctd.sock"\n'
        '[plugins.boom]\nadapter = "tests.test_supervisor:Unbuildable"\n'
        '[plugins.good]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "good"\n'
    )
    Unbuildable.built = 0
    async with running(cfg, fakes) as daemon:
        with trio.fail_after(20):  # a guard only
            await good.wait_until(lambda: good.finished)
        handle = daemon.sources.get("boom")
        assert handle.status.state == "failed" and "cannot build" in handle.status.last_error
        assert daemon.sources.failed() == ["boom"]
        with pytest.raises(ActorStopped, match="not running"):
            await daemon.sync("boom")
        result = await daemon.reload()
        assert result["changed"] == ["boom"] and Unbuildable.built == 2
        assert daemon.sources.get("good") is not None and daemon.sources.failed() == ["boom"]
