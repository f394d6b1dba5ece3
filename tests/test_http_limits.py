"""Caps of the shared HTTP layer against hostile or broken servers, over real loopback sockets:
Retry-After bounded, response bodies bounded after decompression (gzip bombs), for every API adapter."""

from __future__ import annotations

import pytest
import structlog

from ctd.adapters.http import MAX_RETRY_AFTER
from ctd.config import parse_config
from ctd.errors import SourceUnavailable
from ctd.model import PullContext
from ctd.plugins import open_adapter
from tests.loopback import Received, serve

CTX = PullContext(since=0, now=1_800_000_000)
MISP_KEY = "m" * 40


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    """Loopback traffic must not go through a proxy from the test environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)


async def pull_all(toml: str, name: str) -> list:
    cfg = parse_config(toml)
    async with open_adapter(name, cfg.plugins[name]) as adapter:
        return [b async for b in adapter.pull(CTX)]


def too_busy(headers: dict[str, str]):
    def handle(req: Received):
        return 429, {"Content-Type": "application/json", **headers}, b"{}"

    return handle


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "99999999"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
)
async def test_a_huge_retry_after_is_capped_and_logged(headers):
    """A server's Retry-After far in the future is capped at MAX_RETRY_AFTER, and the cap is logged with the origin."""
    with serve("127.0.0.1", too_busy(headers)) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\n'
        with structlog.testing.capture_logs() as logs, pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "m")
    assert exc.value.retry_after == MAX_RETRY_AFTER == 3600
    capped = [e for e in logs if e.get("ctd_event") == "retry_after_capped"]
    assert len(capped) == 1 and capped[0]["origin"] == srv.base and capped[0]["log_level"] == "warning"
    assert capped[0]["requested_s"] > MAX_RETRY_AFTER and capped[0]["retry_after_s"] == MAX_RETRY_AFTER


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-5"])
async def test_a_vendor_retry_header_that_is_not_a_sane_number_is_bounded(value):
    """A vendor rate-limit header of inf, nan, 1e300 or a negative number gives a wait within [0, MAX_RETRY_AFTER]."""
    with serve("127.0.0.1", too_busy({"ratelimit-reset": value})) as srv:
        toml = (
            f'[tenants.t]\nurl = "{srv.base}"\ntoken = "tok"\n'
            '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\nalert_types = ["malsite"]\n'
        )
        with structlog.testing.capture_logs(), pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "ns")
    wait = exc.value.retry_after
    assert wait is None or 0 <= wait <= MAX_RETRY_AFTER


async def test_a_modest_retry_after_is_kept():
    """A Retry-After under the cap is passed on as given, and nothing is logged about it."""
    with serve("127.0.0.1", too_busy({"Retry-After": "120"})) as srv:
        toml = f'[plugins.m]\nadapter = "misp"\nurl = "{srv.base}"\napi_key = "{MISP_KEY}"\n'
        with structlog.testing.capture_logs() as logs, pytest.raises(SourceUnavailable) as exc:
            await pull_all(toml, "m")
    assert exc.value.retry_after == 120
    assert not [e for e in logs if e.get("ctd_event") == "retry_after_capped"]
