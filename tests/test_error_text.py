"""Error text an operator reads: says what happened (refused), once, without tracebacks for bad data, capped."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import AsyncIterator

import pytest
import structlog

from ctd.config import parse_config
from ctd.errors import MAX_ERROR_TEXT, SourceUnavailable, cap, describe
from ctd.model import Adapter, Batch, PullContext
from ctd.plugins import open_adapter
from ctd.service.logs import configure_logging, get_logger
from ctd.sources.actor import AllowlistRef, SourceStatus, _pull
from tests.fakestore import FakeStore


@pytest.fixture
def log_out():
    """The daemon's JSON log, captured."""
    buf = io.StringIO()
    configure_logging("info", stream=buf)
    yield buf
    structlog.reset_defaults()


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


async def test_connection_refused_says_refused_once():
    """A feed at a loopback port nobody listens on: the error names the refusal, once."""
    with socket.socket() as held:  # bound, not listening: connections are refused, the port stays ours
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        cfg = parse_config(f'[plugins.f]\nadapter = "feed"\nurl = "http://127.0.0.1:{port}/x.txt"\nproxy = ""\n')
        async with open_adapter("f", cfg.plugins["f"]) as a:
            with pytest.raises(SourceUnavailable) as exc:
                async for _ in a.pull(PullContext(since=0, now=1)):
                    pass
    text = describe(exc.value)
    assert text.count("Connection refused") == 1 and text.count("all attempts to connect") == 1, text


def test_an_exception_group_is_described_by_its_distinct_reasons():
    """Several addresses refusing give one reason, not one per address."""
    group = ExceptionGroup("all attempts failed", [ConnectionRefusedError(111, "Connection refused")] * 2)
    try:
        raise OSError("all attempts to connect to localhost:1 failed") from group
    except OSError as e:
        assert describe(e) == "all attempts to connect to localhost:1 failed: Connection refused"


def test_a_huge_message_is_capped_with_its_length():
    """A 100 MB error message becomes 500 characters, an ellipsis and the total length."""
    text = describe(ValueError("x" * 100_000_000))
    assert len(text) < MAX_ERROR_TEXT + 40 and text.endswith("… (100000000 chars)")
    assert cap("short") == "short"


class Raises(Adapter):
    can_pull = True

    def __init__(self, exc: BaseException) -> None:
        super().__init__("src", None)
        self.exc = exc

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        raise self.exc
        yield  # pragma: no cover


async def run(store: FakeStore, exc: BaseException) -> SourceStatus:
    plugin = parse_config('[plugins.src]\nadapter = "tests.fake_adapters:ScriptedAdapter"\nkey = "k"\n').plugins["src"]
    status = SourceStatus("src", plugin)
    await _pull("src", plugin, Raises(exc), store, AllowlistRef(), status, None)
    return status


async def test_a_huge_error_reaches_status_and_log_once_and_capped(store, log_out):
    """A peer's 10 MB error text: the status and the one log line carry it capped."""
    status = await run(store, SourceUnavailable("HTTP 500: " + "y" * 10_000_000))
    assert status.last_error is not None and len(status.last_error) < MAX_ERROR_TEXT + 40
    lines = log_out.getvalue().splitlines()
    assert max(len(line) for line in lines) < 2000
    assert sum("yyyy" in line for line in lines) == 1


async def test_a_deeply_nested_document_is_bad_data_not_a_crash(store, log_out):
    """A RecursionError an adapter let through is reported like bad data: no traceback, retried at the interval."""
    status = await run(store, RecursionError("maximum recursion depth exceeded while decoding a JSON array"))
    events = [json.loads(line) for line in log_out.getvalue().splitlines()]
    assert status.state == "idle" and "maximum recursion depth" in (status.last_error or "")
    assert not [e for e in events if "exception" in e or e["event"] == "source pull crashed"]


def test_a_traceback_with_a_huge_message_is_capped_per_line(log_out):
    """A bug's traceback is logged, but the exception line of a 1 MB message is capped."""
    try:
        raise KeyError("z" * 1_000_000)
    except KeyError:
        get_logger("t").error("crashed", exc_info=True)
    [event] = [json.loads(line) for line in log_out.getvalue().splitlines()]
    assert "Traceback" in event["exception"] and len(event["exception"]) < 5000
    assert "chars)" in event["exception"].splitlines()[-1]
