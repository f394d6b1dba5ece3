"""The seed's triangle end to end: etc/examples/triangle.toml run by the real daemon against the vendor emulators.

Everything runs as it would in production, on loopback: the Netskope, Defender
and Mimecast emulators as standalone processes (``python -m tests.emulators.NAME
--control``), a URLhaus-format feed over HTTP, a TAXII 2.1 collection in
medallion, and ``ctd run`` as a subprocess with the example config, only its
addresses and secrets substituted. Tests drive the tools through the emulators'
control endpoints and ctd through ``ctdctl``, and wait for the emulators' state
with bounded polling.
"""

from __future__ import annotations

import datetime as dt
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ctd.config import parse_config
from tests.daemonproc import DaemonProc, short_tmpdir
from tests.loopback import Received, serve
from tests.medallion_server import PASSWORD, USER, Coll, medallion
from tests.vendorprocs import Emulator, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "etc" / "examples" / "triangle.toml"
PLACEHOLDER = "cedefaultpush.io"  # what the tenant keeps in a URL list ctd created or emptied
FEED_URLS = ["http://urlhaus-one.example/a.exe", "http://urlhaus-two.example/b.sh"]
TAXII_URL = "http://taxii-phish.example/login"
TAXII_SHA = "5a" * 32


def urlhaus_csv() -> bytes:
    added = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        f'"{i}","{added}","{url}","online","","malware_download","exe","https://urlhaus.abuse.ch/url/{i}/","r"'
        for i, url in enumerate(FEED_URLS, 1)
    ]
    head = "# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter"
    return "\n".join([head, *rows, ""]).encode()


def stix_indicator(n: int, pattern: str, at: str) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--00000000-0000-4000-8000-00000000{n:04d}",
        "created": at,
        "modified": at,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": at,
        "valid_until": "2099-01-01T00:00:00Z",
        "indicator_types": ["malicious-activity"],
    }


def materialize(emus: dict[str, Emulator], feed: str, taxii: str, secrets_dir: Path) -> str:
    """The example config with the emulators' addresses and secrets put in (nothing else changes)."""
    doc = tomllib.loads(EXAMPLE.read_text())
    ns, mde, mc = emus["netskope"], emus["defender"], emus["mimecast"]
    tenants = doc["tenants"]
    tenants["netskope"]["url"] = ns.base
    tenants["defender"].update(
        url=mde.base, login_url=mde.base, tenant_id=mde.creds["tenant"], client_id=mde.creds["client_id"]
    )
    tenants["mimecast"].update(url=mc.base, client_id=mc.creds["client_id"])
    doc["plugins"]["urlhaus"]["url"] = feed
    doc["plugins"]["intel"].update(url=taxii, username=USER)
    secrets = {
        "netskope-v2": ns.creds["v2_token"],
        "netskope-v1": ns.creds["v1_token"],
        "defender-secret": mde.creds["client_secret"],
        "mimecast-secret": mc.creds["client_secret"],
        "abusech": "not-checked-by-the-test-feed",
        "taxii-password": PASSWORD,
    }
    for table in [*doc["tenants"].values(), *doc["plugins"].values()]:
        for key, value in list(table.items()):
            if isinstance(value, dict) and set(value) == {"credential"}:
                path = secrets_dir / value["credential"]
                path.write_text(secrets[value["credential"]] + "\n")
                del table[key]
                table[f"{key}_file"] = str(path)
    return tomli_w.dumps(doc)


class Triangle:
    def __init__(self, emus: dict[str, Emulator], daemon: DaemonProc) -> None:
        self.ns, self.mde, self.mc = emus["netskope"], emus["defender"], emus["mimecast"]
        self.d = daemon

    def url_list(self, name: str) -> set[str]:
        return set(self.ns.call("list_values", name) or []) - {PLACEHOLDER}

    def edr_values(self) -> set[str]:
        """What ctd created in Defender (the indicators its app made)."""
        return set(self.mde.call("values_by", self.mde.creds["client_id"]))

    def gateway_urls(self) -> set[str]:
        return set(self.mc.call("urls"))

    def wait(self, pred: Callable[[], Any], what: str) -> Any:
        """``wait_for``, with the daemon's last log lines when it times out."""
        try:
            return wait_for(pred, what)
        except AssertionError as exc:
            tail = "\n".join(self.d.log.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"{exc}\n--- daemon log (tail) ---\n{tail}") from None

    def sync(self, source: str) -> None:
        r = self.d.ctl("sync", source)
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def triangle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triangle]:
    """The emulators, the feeds and the daemon running triangle.toml."""
    work = tmp_path_factory.mktemp("triangle")
    emus = {name: Emulator(name) for name in ("netskope", "defender", "mimecast")}  # start together
    daemon = DaemonProc(short_tmpdir(), "", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    try:
        for emu in emus.values():
            emu.started()
        for name in ("ctd-defender-hashes", "ctd-mimecast-hashes", "ctd-intel-hashes"):
            emus["netskope"].call("add_hash_list", name)
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        added = at.replace(".000Z", ".000000Z")
        objects = [
            (stix_indicator(1, f"[url:value = '{TAXII_URL}']", at), added),
            (stix_indicator(2, f"[file:hashes.'SHA-256' = '{TAXII_SHA}']", at), added),
        ]
        coll = Coll("c0f1e2d3-0000-4000-8000-00000000aaaa", "High Confidence Indicators", objects=objects)
        body = urlhaus_csv()
        with (
            medallion(work, {"api1": (1_000_000, [coll])}) as taxii,
            serve("127.0.0.1", lambda req: _feed(req, body)) as feed,
        ):
            daemon.write_config(materialize(emus, f"{feed.base}/downloads/csv_recent/", taxii.discovery, daemon.dir))
            daemon.start().wait_ready()
            yield Triangle(emus, daemon)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        daemon.cleanup()
        for emu in emus.values():
            emu.stop()


def _feed(req: Received, body: bytes) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/csv"}, body


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the tests -------------------------------------------------------------------------------


def test_feeds_reach_all_three_tools_each_into_its_own_list(triangle: Triangle):
    """URLhaus and the TAXII collection reach the EDR, the gateway and one tenant URL list per source."""
    triangle.wait(lambda: triangle.url_list("ctd-urlhaus") == set(FEED_URLS), "the URLhaus list on the tenant")
    triangle.wait(lambda: triangle.url_list("ctd-intel") == {TAXII_URL}, "the TAXII list on the tenant")
    triangle.wait(lambda: set(FEED_URLS) | {TAXII_URL} <= triangle.gateway_urls(), "the feeds' URLs on the gateway")
    triangle.wait(lambda: set(FEED_URLS) | {TAXII_URL, TAXII_SHA} <= triangle.edr_values(), "the feeds on the EDR")
    triangle.wait(lambda: triangle.ns.call("hash_values", "ctd-intel-hashes") == [TAXII_SHA], "the TAXII hash list")


def test_an_edr_detection_reaches_the_tenant_and_the_gateway_and_not_back(triangle: Triangle):
    """A URL in a Defender alert lands in the tenant's Defender list and in Mimecast, never back in Defender."""
    url = "http://edr-found.example/dropper"
    triangle.mde.call("add_alert", evidence=[{"entityType": "Url", "url": url}], lastUpdateTime=iso_now())
    triangle.sync("edr")
    triangle.wait(lambda: url in triangle.url_list("ctd-defender"), "the EDR's URL on the tenant")
    triangle.wait(lambda: url in triangle.gateway_urls(), "the EDR's URL on the gateway")
    assert url not in triangle.edr_values()
    assert triangle.url_list("ctd-defender") == {url}  # only the EDR's own URLs in its list
    assert url not in triangle.url_list("ctd-mimecast") | triangle.url_list("ctd-urlhaus")


def test_a_gateway_detection_reaches_the_tenant_and_the_edr_and_not_back(triangle: Triangle):
    """A malicious click in Mimecast lands in the tenant's Mimecast list and in Defender, never back in Mimecast."""
    url = "http://gateway-found.example/phish"
    triangle.mc.call("add_click", url, at=int(time.time()))
    triangle.sync("gateway")
    triangle.wait(lambda: url in triangle.url_list("ctd-mimecast"), "the gateway's URL on the tenant")
    triangle.wait(lambda: url in triangle.edr_values(), "the gateway's URL on the EDR")
    assert url not in triangle.gateway_urls()
    assert triangle.url_list("ctd-mimecast") == {url}
    assert url not in triangle.url_list("ctd-defender") | triangle.url_list("ctd-intel")


def test_withdrawing_an_ioc_removes_it_from_every_destination(triangle: Triangle):
    """``ctdctl indicators retract`` withdraws the IoC from the tenant list and the other tool, by recorded id."""
    edr_url, gw_url = "http://edr-expired.example/x", "http://gateway-expired.example/y"
    triangle.mde.call("add_alert", evidence=[{"entityType": "Url", "url": edr_url}], lastUpdateTime=iso_now())
    triangle.mc.call("add_click", gw_url, at=int(time.time()))
    triangle.sync("edr")
    triangle.sync("gateway")
    triangle.wait(lambda: edr_url in triangle.gateway_urls() and gw_url in triangle.edr_values(), "both shared")
    triangle.wait(lambda: edr_url in triangle.url_list("ctd-defender"), "the EDR's URL on the tenant")
    triangle.wait(lambda: gw_url in triangle.url_list("ctd-mimecast"), "the gateway's URL on the tenant")
    for url in (edr_url, gw_url):
        r = triangle.d.ctl("indicators", "retract", url)
        assert r.returncode == 0, r.stderr
    triangle.wait(lambda: edr_url not in triangle.gateway_urls(), "the EDR's URL withdrawn from the gateway")
    triangle.wait(lambda: gw_url not in triangle.edr_values(), "the gateway's URL withdrawn from the EDR")
    triangle.wait(lambda: edr_url not in triangle.url_list("ctd-defender"), "the EDR's URL withdrawn from the tenant")
    triangle.wait(
        lambda: gw_url not in triangle.url_list("ctd-mimecast"), "the gateway's URL withdrawn from the tenant"
    )
    assert set(FEED_URLS) <= triangle.gateway_urls()  # nothing else went with them


def test_plugins_check_authenticates_against_each_tool(triangle: Triangle):
    """``ctdctl plugins check`` makes a real authenticated call to the tenant, Defender and Mimecast."""
    for name, says in (
        ("tenant", "reached Netskope tenant"),
        ("edr", "authenticated for tenant"),
        ("gateway", "authenticated at"),
    ):
        out = triangle.d.ctl_json("plugins", "check", name)
        assert out["ok"] and says in out["message"], out


def test_the_example_is_the_triangle_both_ways_with_a_list_per_source(tmp_path, monkeypatch):
    """triangle.toml validates; each pair of tools shares both ways; each tenant list takes one source."""
    for name in ("netskope-v2", "netskope-v1", "defender-secret", "mimecast-secret", "abusech", "taxii-password"):
        (tmp_path / name).write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    tools = {"tenant", "edr", "gateway"}
    edges = {(src, sh.destination) for sh in cfg.sharing.values() if sh.rule == "urls" for src in sh.sources}
    assert {(a, b) for a in tools for b in tools if a != b} <= edges
    lists = [(sh.sources, sh.params.list) for sh in cfg.sharing.values() if sh.action == "url_list"]
    assert all(len(sources) == 1 for sources, _ in lists) and len({name for _, name in lists}) == len(lists)
    assert {s for sources, _ in lists for s in sources} == {"edr", "gateway", "urlhaus", "intel"}
    assert {r.filter for r in cfg.rules.values()} == {"type = url", "type in (md5, sha256)"}
