"""Every emulator runs standalone (``python -m tests.emulators.NAME``) and answers over loopback.

Each test starts the emulator as a real subprocess on a free port with a small
rate limit, then with httpx: authenticates, reads one paginated page and the
next, and runs into the vendor's 429 with the vendor's rate headers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


class Running:
    def __init__(self, proc: subprocess.Popen[str], info: dict) -> None:
        self.proc = proc
        self.base = info["base_url"]
        self.creds = info["credentials"]
        self.client = httpx.Client(base_url=self.base, timeout=10)


@pytest.fixture
def start() -> Iterator:
    running: list[Running] = []

    def _start(name: str, *args: str) -> Running:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"tests.emulators.{name}", "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            proc.kill()
            raise AssertionError(f"{name} did not start: {proc.stderr.read() if proc.stderr else ''}")
        r = Running(proc, json.loads(line))
        running.append(r)
        return r

    yield _start
    for r in running:
        r.client.close()
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(timeout=10)
        finally:
            if r.proc.poll() is None:
                r.proc.kill()
        if r.proc.stdout:
            r.proc.stdout.close()
        if r.proc.stderr:
            r.proc.stderr.close()


def test_start_line_names_loopback_url_and_credentials(start):
    """The first stdout line is JSON with a loopback base URL and the credentials accepted."""
    r = start("sentinelone")
    assert r.base.startswith("http://127.0.0.1:") and r.creds["token"]


def test_sigterm_stops_the_emulator(start):
    """SIGTERM ends the process with status 0."""
    r = start("mimecast")
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(timeout=10) == 0


def test_non_loopback_host_is_refused():
    """Binding anything but a loopback address is refused before a socket opens."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.emulators.misp", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "loopback" in out.stderr


def test_netskope_standalone(start):
    """Netskope: the v2 token authenticates, the alert iterator pages, the budget ends in 429 with ratelimit-*."""
    r = start("netskope", "--rate-limit", "4", "--page-size", "2")
    c, auth = r.client, {"Netskope-Api-Token": r.creds["v2_token"]}
    assert c.get("/api/v2/policy/urllist", headers={"Netskope-Api-Token": "wrong"}).status_code == 401
    first = c.get(
        "/api/v2/events/dataexport/alerts/malware", params={"index": "t", "operation": "head"}, headers=auth
    ).json()
    nxt = c.get(
        "/api/v2/events/dataexport/alerts/malware", params={"index": "t", "operation": "next"}, headers=auth
    ).json()
    assert len(first["result"]) == 2 and len(nxt["result"]) == 2 and first["result"] != nxt["result"]
    c.get("/api/v2/policy/urllist", headers=auth)
    limited = c.get("/api/v2/policy/urllist", headers=auth)
    assert limited.status_code == 429 and limited.headers["ratelimit-remaining"] == "0"


def test_crowdstrike_standalone(start):
    """CrowdStrike: OAuth2 token, combined query paged by meta.pagination.after, 429 with X-RateLimit-*."""
    r = start("crowdstrike", "--rate-limit", "2")
    c = r.client
    tok = c.post(
        "/oauth2/token", data={"client_id": r.creds["client_id"], "client_secret": r.creds["client_secret"]}
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {tok}"}
    page = c.get("/iocs/combined/indicator/v1", params={"limit": 2}, headers=auth).json()
    after = page["meta"]["pagination"]["after"]
    page2 = c.get("/iocs/combined/indicator/v1", params={"limit": 2, "after": after}, headers=auth).json()
    assert len(page["resources"]) == 2 and page2["resources"][0]["id"] > page["resources"][-1]["id"]
    limited = c.get("/iocs/combined/indicator/v1", headers=auth)
    assert limited.status_code == 429 and "X-RateLimit-RetryAfter" in limited.headers


def test_misp_standalone(start):
    """MISP: the API key authenticates, restSearch pages with limit/page, the proxy's 429 has Retry-After."""
    r = start("misp", "--rate-limit", "3")
    c = r.client
    auth = {"Authorization": r.creds["api_key"], "Accept": "application/json"}
    assert c.post("/attributes/restSearch", json={}, headers={**auth, "Authorization": "x"}).status_code == 403
    p1 = c.post("/attributes/restSearch", json={"limit": 2, "page": 1}, headers=auth).json()
    p2 = c.post("/attributes/restSearch", json={"limit": 2, "page": 2}, headers=auth).json()
    assert [a["value"] for a in p1["response"]["Attribute"]] == ["192.0.2.1", "192.0.2.2"]
    assert [a["value"] for a in p2["response"]["Attribute"]] == ["192.0.2.3", "192.0.2.4"]
    limited = c.post("/attributes/restSearch", json={}, headers=auth)
    assert limited.status_code == 429 and limited.headers["Retry-After"]


def test_mimecast_standalone(start):
    """Mimecast: OAuth token, click logs paged by meta.pagination.next, 429 with X-RateLimit-* (reset in ms)."""
    r = start("mimecast", "--rate-limit", "3")
    c = r.client
    tok = c.post(
        "/oauth/token",
        data={
            "client_id": r.creds["client_id"],
            "client_secret": r.creds["client_secret"],
            "grant_type": "client_credentials",
        },
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {tok}"}
    body = {"meta": {"pagination": {"pageSize": 2}}, "data": [{"from": "2000-01-01T00:00:00+0000"}]}
    p1 = c.post("/api/ttp/url/get-logs", json=body, headers=auth).json()
    body["meta"]["pagination"]["pageToken"] = p1["meta"]["pagination"]["next"]
    p2 = c.post("/api/ttp/url/get-logs", json=body, headers=auth).json()
    assert len(p1["data"][0]["clickLogs"]) == 2 and p1["data"][0]["clickLogs"] != p2["data"][0]["clickLogs"]
    c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth)
    limited = c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth)
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Remaining"] == "0" and int(limited.headers["X-RateLimit-Reset"]) > 1000


def test_defender_standalone(start):
    """Defender: Entra token, indicators paged by @odata.nextLink, 429 with Retry-After."""
    r = start("defender", "--rate-limit", "2", "--page-size", "3")
    c = r.client
    tok = c.post(
        r.creds["token_url"],
        data={
            "client_id": r.creds["client_id"],
            "scope": r.creds["scope"],
            "client_secret": r.creds["client_secret"],
            "grant_type": "client_credentials",
        },
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {tok}"}
    p1 = c.get("/api/indicators", headers=auth).json()
    p2 = c.get(p1["@odata.nextLink"], headers=auth).json()
    assert len(p1["value"]) == 3 and len(p2["value"]) == 2 and "@odata.nextLink" not in p2
    limited = c.get("/api/indicators", headers=auth)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json()["error"]["code"] == "TooManyRequests"


def test_sentinelone_standalone(start):
    """SentinelOne: ApiToken header, IOCs paged by pagination.nextCursor, 429 with Retry-After."""
    r = start("sentinelone", "--rate-limit", "3")
    c = r.client
    assert c.get("/web/api/v2.1/threats", headers={"Authorization": "ApiToken nope"}).status_code == 401
    auth = {"Authorization": f"ApiToken {r.creds['token']}"}
    q = {"accountIds": r.creds["accountId"], "limit": 3}
    p1 = c.get("/web/api/v2.1/threat-intelligence/iocs", params=q, headers=auth).json()
    p2 = c.get(
        "/web/api/v2.1/threat-intelligence/iocs", params={**q, "cursor": p1["pagination"]["nextCursor"]}, headers=auth
    ).json()
    assert len(p1["data"]) == 3 and len(p2["data"]) == 2 and p2["pagination"]["nextCursor"] is None
    assert c.get("/web/api/v2.1/threats", headers=auth).status_code == 200
    limited = c.get("/web/api/v2.1/threats", headers=auth)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json()["errors"][0]["code"] == 4290010


def test_control_endpoint_only_with_the_flag_and_only_listed_helpers(start):
    """--control lets a test call the emulator's CONTROL helpers over HTTP; nothing else, and not without it."""
    plain = start("mimecast")
    assert plain.client.post("/_emulator/urls", json={}).status_code == 401  # the vendor's own answer
    r = start("mimecast", "--control")
    assert r.client.post("/_emulator/add_managed_url", json={"args": ["https://x.example/"]}).status_code == 200
    assert r.client.post("/_emulator/urls", json={}).json() == {"result": ["https://x.example/"]}
    assert r.client.post("/_emulator/handle", json={}).status_code == 404
    assert r.client.post("/_emulator/__init__", json={}).status_code == 404
