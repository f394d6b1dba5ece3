"""Tests for ctd.service.logs: JSON lines, context, redaction, levels, exceptions."""

import io
import json
import re

import pytest
import structlog
import trio

from ctd.service.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_structlog():
    """Leave structlog and its contextvars as we found them."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


@pytest.fixture
def out():
    """A stream configured as the log sink at level info."""
    buf = io.StringIO()
    configure_logging("info", stream=buf)
    return buf


def lines(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_object_per_event(out):
    """Each event is one JSON line with ts, level and event."""
    log = get_logger("t")
    log.info("first", n=1)
    log.warning("second")
    first, second = lines(out)
    assert first["event"] == "first" and first["level"] == "info" and first["n"] == 1
    assert second["level"] == "warning"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])


def test_bound_contextvars_appear(out):
    """Context bound with bind_contextvars is merged into the entry."""
    structlog.contextvars.bind_contextvars(source="feed-a")
    get_logger().info("pulled", count=3)
    assert lines(out)[0]["source"] == "feed-a"


async def test_contextvars_are_per_trio_task(out):
    """A source bound in a child task shows in its entries, not in the parent's."""

    async def child(name):
        structlog.contextvars.bind_contextvars(source=name)
        get_logger().info("child")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child, "a")
        nursery.start_soon(child, "b")
    get_logger().info("parent")
    entries = lines(out)
    assert sorted(e["source"] for e in entries if e["event"] == "child") == ["a", "b"]
    assert "source" not in entries[-1]


def test_secret_value_never_logged(out):
    """A token= kwarg is replaced by *** and its value never reaches the output."""
    get_logger().info("auth", token="s3cr3t")
    assert "s3cr3t" not in out.getvalue()
    assert lines(out)[0]["token"] == "***"


def test_nested_and_bound_secrets_redacted(out):
    """Secret keys inside dicts and in bound context are redacted too."""
    structlog.contextvars.bind_contextvars(password="hunter2")
    get_logger().info("req", headers={"Authorization": "Bearer abc123"}, api_key="k-999")
    text = out.getvalue()
    for secret in ("hunter2", "abc123", "k-999"):
        assert secret not in text


def test_debug_dropped_at_info(out):
    """At level info, debug events produce no output."""
    get_logger().debug("noise")
    get_logger().info("signal")
    assert [e["event"] for e in lines(out)] == ["signal"]


def test_reconfigure_changes_level():
    """Calling configure_logging again with debug lets debug events through."""
    buf = io.StringIO()
    configure_logging("info", stream=buf)
    log = get_logger()
    log.debug("dropped")
    configure_logging("debug", stream=buf)
    log.debug("kept")
    assert [e["event"] for e in lines(buf)] == ["kept"]


def test_exception_field(out):
    """log.exception() inside an except block adds an 'exception' traceback field."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger().exception("failed")
    entry = lines(out)[0]
    assert entry["level"] == "error"
    assert "RuntimeError: boom" in entry["exception"]


def test_non_serialisable_value_rendered_with_str(out):
    """Values JSON cannot encode are rendered with str()."""

    class Thing:
        def __str__(self):
            return "thing!"

    get_logger().info("obj", value=Thing())
    assert lines(out)[0]["value"] == "thing!"


def test_unknown_level_rejected():
    """An unknown level name raises ValueError."""
    with pytest.raises(ValueError):
        configure_logging("verbose", stream=io.StringIO())


def test_named_logger_records_its_name(out):
    """get_logger(name) adds logger_name=name to its entries."""
    get_logger("ctd.store").info("opened")
    assert lines(out)[0]["logger_name"] == "ctd.store"


def test_default_stream_is_stderr(capsys):
    """Without a stream, entries go to sys.stderr (looked up at configure time)."""
    configure_logging("info")
    get_logger().info("to-stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to-stderr"
