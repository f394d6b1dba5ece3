"""Connection options: proxies from the environment, ``proxy = ""``, ``verify_tls = false``, tenant secrets.

Proxies are exercised for real: a recording server on 127.0.0.2 plays the
proxy named by ``HTTP_PROXY``.
"""

from __future__ import annotations

import json

import pytest
import structlog

from ctd.config import parse_config, summary
from ctd.config_warnings import log_warnings
from ctd.model import PullContext
from ctd.plugins import open_adapter
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.loopback import ok, serve

FEED = b"198.51.100.9\n"
CTX = PullContext(since=0, now=1_800_000_000)


@pytest.fixture
def proxy_env(monkeypatch):
    """A recording "proxy" on 127.0.0.2 set as HTTP_PROXY, with no NO_PROXY exceptions."""
    for k in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(k, raising=False)
    with serve("127.0.0.2", ok(FEED)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        yield proxy


async def pull_values(toml: str) -> list[str]:
    cfg = parse_config(toml)
    async with open_adapter("f", cfg.plugins["f"]) as adapter:
        return [s.value async for b in adapter.pull(CTX) for s in b.sightings]  # type: ignore[misc]


async def test_environment_proxy_is_honoured_by_default(proxy_env):
    """Without a proxy key, HTTP_PROXY from the environment carries the request."""
    assert await pull_values('[plugins.f]\nadapter = "feed"\nurl = "http://127.0.0.1:1/feed.txt"\n') == ["198.51.100.9"]
    assert [r.target for r in proxy_env.received] == ["http://127.0.0.1:1/feed.txt"]


async def test_empty_proxy_disables_environment_proxies(proxy_env):
    """``proxy = ""`` connects directly, ignoring HTTP_PROXY."""
    with serve("127.0.0.1", ok(b"198.51.100.10\n")) as direct:
        values = await pull_values(f'[plugins.f]\nadapter = "feed"\nurl = "{direct.base}/feed.txt"\nproxy = ""\n')
    assert values == ["198.51.100.10"]
    assert proxy_env.received == [] and len(direct.received) == 1


def test_tenant_secrets_are_hidden_in_the_config_repr():
    """Tokens of a [tenants.NAME] table never show in a repr of the config; its url does."""
    cfg = parse_config(
        '[tenants.prod]\nurl = "https://acme.goskope.com"\ntoken = "v2-secret-xyz"\nv1_token = "v1-secret-xyz"\n'
    )
    text = repr(cfg)
    assert "secret-xyz" not in text and "https://acme.goskope.com" in text
    assert cfg.tenants["prod"]["token"] == "v2-secret-xyz"  # the value itself is intact


def test_proxy_credentials_are_hidden_in_reprs():
    """A proxy URL may carry user:password, so it never shows in a repr of the options."""
    cfg = parse_config(
        '[plugins.f]\nadapter = "feed"\nurl = "https://f.example/x"\nproxy = "http://user:pw-xyz@proxy.example:3128"\n'
    )
    assert "pw-xyz" not in repr(cfg)


def insecure_config() -> str:
    return (
        '[tenants.t]\nurl = "https://acme.goskope.com"\ntoken = "x"\nverify_tls = false\n'
        '[plugins.ns]\nadapter = "netskope"\ntenant = "t"\npull = false\n'
        '[plugins.f]\nadapter = "feed"\nurl = "https://f.example/x"\nverify_tls = false\n'
        '[plugins.ok]\nadapter = "feed"\nurl = "https://g.example/x"\n'
    )


def test_verify_tls_false_is_a_warning_per_plugin():
    """Each plugin that does not verify TLS (itself or through its tenant) gets one tls_verification_disabled."""
    with structlog.testing.capture_logs() as logs:
        log_warnings(parse_config(insecure_config()))
    events = [e for e in logs if e.get("ctd_event") == "tls_verification_disabled"]
    assert sorted(e["ctd_plugin"] for e in events) == ["f", "ns"]
    assert all(e["log_level"] == "warning" for e in events)


def test_check_config_summary_names_unverified_plugins():
    """`ctd check-config` says which plugins do not verify TLS."""
    text = summary(parse_config(insecure_config()))
    assert "verify_tls = false" in text and "f, ns" in text


def test_daemon_warns_about_verify_tls_false_in_log_and_plugins_list():
    """The real daemon logs tls_verification_disabled at load and `ctdctl plugins list` shows it."""
    d = DaemonProc(
        short_tmpdir(),
        '[plugins.f]\nadapter = "feed"\nurl = "https://127.0.0.1:1/x"\n'
        'verify_tls = false\npull = false\n[plugins.g]\nadapter = "feed"\n'
        'url = "https://127.0.0.1:1/y"\npull = false\n',
    )
    try:
        d.start().wait_ready()
        listing = d.ctl("plugins", "list").stdout
        data = json.loads(d.ctl("--json", "plugins", "list").stdout)
        assert d.stop() == 0
        events = [e for e in d.logs() if e.get("ctd_event") == "tls_verification_disabled"]
    finally:
        d.cleanup()
    assert [e.get("ctd_plugin") for e in events] == ["f"]
    assert {p["name"]: p["verify_tls"] for p in data} == {"f": False, "g": True}
    assert "f: TLS certificates are not verified (verify_tls = false)" in listing
    assert "g: TLS" not in listing
