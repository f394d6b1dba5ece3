"""The Mimecast, Defender and SentinelOne emulators behave as their vendors document (in-process)."""

from __future__ import annotations

import httpx
import pytest

from tests.emulators.common import Windows
from tests.emulators.defender import DefenderEmulator
from tests.emulators.mimecast import MimecastEmulator
from tests.emulators.sentinelone import IOCS, SentinelOneEmulator


def client(emu) -> httpx.Client:
    return httpx.Client(transport=emu.transport(), base_url="https://vendor.test")


# --- Mimecast ---------------------------------------------------------------------------------


def mc_login(emu: MimecastEmulator) -> tuple[httpx.Client, dict[str, str]]:
    c = client(emu)
    tok = c.post(
        "/oauth/token",
        data={"client_id": emu.client_id, "client_secret": emu.client_secret, "grant_type": "client_credentials"},
    ).json()
    assert tok["expires_in"] == 1800 and tok["token_type"] == "Bearer"
    return c, {"Authorization": f"Bearer {tok['access_token']}"}


def test_mimecast_bad_secret_and_expired_token_are_401():
    """A wrong client secret gets invalid_client; an expired token gets 401 until a new one is fetched."""
    emu = MimecastEmulator()
    c, auth = mc_login(emu)
    bad = c.post(
        "/oauth/token", data={"client_id": emu.client_id, "client_secret": "x", "grant_type": "client_credentials"}
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    emu.tokens.expire_all()
    assert c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth).status_code == 401
    _, auth2 = mc_login(emu)
    assert c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth2).status_code == 200


def test_mimecast_create_managed_url_fails_per_item():
    """Refused items come back in fail[] with key and errors; the rest of the batch is created with ids."""
    emu = MimecastEmulator()
    c, auth = mc_login(emu)
    body = {
        "data": [
            {"url": "https://evil.example/a", "action": "block"},
            {"url": "https://evil.example/b#frag", "action": "block"},
            {"url": "evil2.example", "action": "nuke"},
            {"url": "https://evil.example/a", "action": "block"},
        ]
    }
    r = c.post("/api/ttp/url/create-managed-url", json=body, headers=auth).json()
    assert r["meta"]["status"] == 200
    assert [d["domain"] for d in r["data"]] == ["evil.example"] and r["data"][0]["id"]
    assert [f["key"]["url"] for f in r["fail"]] == [
        "https://evil.example/b#frag",
        "evil2.example",
        "https://evil.example/a",
    ]
    assert r["fail"][0]["errors"][0]["message"] == "The URL must not include a fragment (#)"
    assert r["fail"][2]["errors"][0]["code"] == "err_managed_url_exists"


def test_mimecast_managed_url_limit_and_delete():
    """Past the account's URL limit items fail; delete by id removes, an unknown id fails per item."""
    emu = MimecastEmulator()
    emu.max_urls = 1
    c, auth = mc_login(emu)
    r = c.post(
        "/api/ttp/url/create-managed-url",
        headers=auth,
        json={
            "data": [
                {"url": "a.example", "action": "block", "matchType": "domain"},
                {"url": "b.example", "action": "block"},
            ]
        },
    )
    assert r.json()["fail"][0]["errors"][0]["code"] == "err_managed_url_limit"
    listed = c.post("/api/ttp/url/get-all-managed-urls", headers=auth, json={"data": []}).json()["data"]
    gone = c.post(
        "/api/ttp/url/delete-managed-url", headers=auth, json={"data": [{"id": listed[0]["id"]}, {"id": "nope"}]}
    ).json()
    assert emu.managed_urls == {} and gone["fail"][0]["key"] == {"id": "nope"}


def test_mimecast_sender_must_be_an_email_address():
    """permit-or-block-sender takes an email address for sender and to; a domain fails per item."""
    emu = MimecastEmulator()
    c, auth = mc_login(emu)
    r = c.post(
        "/api/managedsender/permit-or-block-sender",
        headers=auth,
        json={
            "data": [
                {"sender": "bad@evil.example", "to": "ceo@corp.example", "action": "block"},
                {"sender": "evil.example", "to": "ceo@corp.example", "action": "block"},
            ]
        },
    ).json()
    assert r["data"][0]["type"] == "Block" and r["data"][0]["id"]
    assert r["fail"][0]["errors"][0]["message"] == "sender must be an email address"


def test_mimecast_rate_headers_and_429_with_reset_in_ms():
    """Each reply carries X-RateLimit-*; past the quota a 429 says how many ms until one call returns."""
    emu = MimecastEmulator(rate_limit=2, rate_reset_ms=5000)
    c, auth = mc_login(emu)
    first = c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth)
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth)
    limited = c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth)
    assert limited.status_code == 429 and 0 < int(limited.headers["X-RateLimit-Reset"]) <= 5000
    assert limited.json()["fail"][0]["errors"][0]["retryable"] is True


def test_mimecast_feed_is_pipe_csv_continued_by_token():
    """The threat-intel feed answers |-separated CSV and a next token header while rows remain."""
    emu = MimecastEmulator()
    emu.page_default = 2
    for i in range(3):
        emu.add_feed_row(f"{i + 1:032x}", f"{i + 1:064x}")
    c, auth = mc_login(emu)
    r1 = c.post("/api/ttp/threat-intel/get-feed", headers=auth, json={"data": [{"feedType": "malware_customer"}]})
    token = r1.headers["x-mc-threat-feed-next-token"]
    r2 = c.post(
        "/api/ttp/threat-intel/get-feed",
        headers=auth,
        json={"data": [{"feedType": "malware_customer", "token": token}]},
    )
    assert r1.text.splitlines()[0].split("|")[-2:] == ["MD5", "SHA256"] and len(r1.text.splitlines()) == 3
    assert len(r2.text.splitlines()) == 2 and "x-mc-threat-feed-next-token" not in r2.headers


def test_mimecast_forbidden_and_injected_failure():
    """A path outside the role is 403; fail_next answers the next call with that status."""
    emu = MimecastEmulator()
    emu.forbidden.add("/api/ttp/url/get-logs")
    emu.fail_next.append(503)
    c, auth = mc_login(emu)
    assert c.post("/api/ttp/url/get-all-managed-urls", json={"data": []}, headers=auth).status_code == 503
    assert c.post("/api/ttp/url/get-logs", json={"data": [{}]}, headers=auth).status_code == 403


# --- Defender ---------------------------------------------------------------------------------


def mde_login(emu: DefenderEmulator, client_id: str = "mde-app", secret: str = "mde-secret") -> tuple:
    c = client(emu)
    r = c.post(
        f"/{emu.tenant}/oauth2/v2.0/token",
        data={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "scope": "https://api.securitycenter.microsoft.com/.default",
        },
    )
    return c, {"Authorization": f"Bearer {r.json()['access_token']}"}


def ind(value: str, typ: str = "FileSha256", **kw) -> dict:
    return {
        "indicatorValue": value,
        "indicatorType": typ,
        "action": "Audit",
        "generateAlert": True,
        "title": "t",
        "description": "d",
        **kw,
    }


def test_defender_token_errors_are_aadsts():
    """Wrong secret is 401 invalid_client AADSTS7000215; an unknown tenant is 400 AADSTS90002."""
    emu = DefenderEmulator()
    c = client(emu)
    form = {
        "client_id": "mde-app",
        "client_secret": "bad",
        "grant_type": "client_credentials",
        "scope": "https://api.securitycenter.microsoft.com/.default",
    }
    bad = c.post(f"/{emu.tenant}/oauth2/v2.0/token", data=form)
    assert bad.status_code == 401 and bad.json()["error_codes"] == [7000215]
    assert c.post("/other/oauth2/v2.0/token", data=form).json()["error_codes"] == [90002]


def test_defender_import_reports_each_failure_and_caps_batches():
    """Import answers isFailed/failureReason per indicator; more than 500 is MaximumBatchSizeExceeded."""
    emu = DefenderEmulator()
    c, auth = mde_login(emu)
    r = c.post(
        "/api/indicators/import",
        headers=auth,
        json={
            "Indicators": [
                ind("a" * 64),
                ind("10.0.0.0/8", "IpAddress"),
                ind("b" * 64, action="Audit", generateAlert=False),
            ]
        },
    )
    rows = r.json()["value"]
    assert [x["isFailed"] for x in rows] == [False, True, True] and rows[0]["id"]
    assert rows[1]["failureReason"] == "IP address 10.0.0.0/8 is invalid."
    big = c.post("/api/indicators/import", headers=auth, json={"Indicators": [ind("c" * 64)] * 501})
    assert big.status_code == 400 and big.json()["error"]["code"] == "MaximumBatchSizeExceeded"
    wrong_case = c.post("/api/indicators/import", headers=auth, json={"indicators": [ind("c" * 64)]})
    assert wrong_case.json()["error"]["code"] == "InvalidRequestBody"


def test_defender_active_indicator_cap():
    """Past the tenant's active-indicator cap new indicators fail; updating an existing one still works."""
    emu = DefenderEmulator()
    emu.max_active = 1
    c, auth = mde_login(emu)
    rows = c.post(
        "/api/indicators/import",
        headers=auth,
        json={"Indicators": [ind("a" * 64), ind("b" * 64), ind("a" * 64, severity="High")]},
    ).json()["value"]
    assert [x["isFailed"] for x in rows] == [False, True, False] and "limit of 1" in rows[1]["failureReason"]


def test_defender_list_pages_with_next_link_and_filter():
    """$filter narrows, $top pages and @odata.nextLink carries $skip; $top over 10,000 is an OData error."""
    emu = DefenderEmulator()
    c, auth = mde_login(emu)
    c.post(
        "/api/indicators/import",
        headers=auth,
        json={"Indicators": [ind(f"{i:064x}") for i in range(1, 4)] + [ind("evil.example", "DomainName")]},
    )
    p1 = c.get("/api/indicators", headers=auth, params={"$filter": "indicatorType eq 'FileSha256'", "$top": 2}).json()
    p2 = c.get(p1["@odata.nextLink"], headers=auth).json()
    assert len(p1["value"]) == 2 and len(p2["value"]) == 1 and "@odata.nextLink" not in p2
    assert c.get("/api/indicators", headers=auth, params={"$top": 10001}).json()["error"]["code"] == "ODataError"


def test_defender_batch_delete_is_all_or_nothing():
    """BatchDelete answers 404 if any id is unknown (nothing deleted), 204 when all exist."""
    emu = DefenderEmulator()
    c, auth = mde_login(emu)
    ids = [
        x["id"]
        for x in c.post(
            "/api/indicators/import", headers=auth, json={"Indicators": [ind("a" * 64), ind("b" * 64)]}
        ).json()["value"]
    ]
    assert c.post("/api/indicators/BatchDelete", headers=auth, json={"IndicatorIds": [*ids, "9"]}).status_code == 404
    assert len(emu.indicators) == 2
    assert c.post("/api/indicators/BatchDelete", headers=auth, json={"IndicatorIds": ids}).status_code == 204
    assert emu.indicators == {}


def test_defender_readwrite_app_sees_only_its_own():
    """An app with Ti.ReadWrite (not .All) lists only what it created and cannot delete others' (403)."""
    emu = DefenderEmulator()
    emu.add_app("narrow", "s", {"Ti.ReadWrite"})
    c, auth = mde_login(emu)
    theirs = c.post("/api/indicators/import", headers=auth, json={"Indicators": [ind("a" * 64)]}).json()["value"]
    c2, auth2 = mde_login(emu, "narrow", "s")
    assert c2.get("/api/indicators", headers=auth2).json()["value"] == []
    r = c2.post("/api/indicators/BatchDelete", headers=auth2, json={"IndicatorIds": [theirs[0]["id"]]})
    assert r.status_code == 403


def test_defender_rate_limit_429_retry_after():
    """The 31st import in a minute gets 429 with Retry-After; a minute later calls go through again."""
    emu = DefenderEmulator()
    now = [0.0]
    emu.windows = Windows(now=lambda: now[0])
    c, auth = mde_login(emu)
    for _ in range(30):
        assert c.post("/api/indicators/import", headers=auth, json={"Indicators": []}).status_code == 200
    limited = c.post("/api/indicators/import", headers=auth, json={"Indicators": []})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    now[0] = 60.0
    assert c.post("/api/indicators/import", headers=auth, json={"Indicators": []}).status_code == 200


def test_defender_alerts_expand_evidence():
    """Alerts carry evidence only with $expand=evidence."""
    emu = DefenderEmulator()
    emu.add_alert(evidence=[{"entityType": "File", "sha256": "a" * 64}])
    c, auth = mde_login(emu)
    assert c.get("/api/alerts", headers=auth).json()["value"][0]["evidence"] == []
    assert c.get("/api/alerts", headers=auth, params={"$expand": "evidence"}).json()["value"][0]["evidence"]


# --- SentinelOne ------------------------------------------------------------------------------


def s1(emu: SentinelOneEmulator) -> tuple[httpx.Client, dict[str, str]]:
    return client(emu), {"Authorization": f"ApiToken {emu.token}"}


def ioc(value: str, typ: str = "SHA256", **kw) -> dict:
    return {"type": typ, "value": value, "method": "EQUALS", "source": "ctd", **kw}


def test_sentinelone_invalid_item_refuses_the_whole_request():
    """One invalid IOC makes the POST a 400 naming data.<i>.<field>; nothing is created."""
    emu = SentinelOneEmulator()
    c, auth = s1(emu)
    r = c.post(
        IOCS,
        headers=auth,
        json={
            "filter": {"accountIds": [emu.account_id]},
            "data": [ioc("a" * 64), ioc("10.0.0.0/8", "IPV4"), ioc("x", "CIDR")],
        },
    )
    assert r.status_code == 400 and emu.iocs == {}
    assert [e["detail"] for e in r.json()["errors"]] == [
        "data.1.value: Invalid IPV4 value",
        "data.2.type: Must be one of: DNS, IPV4, IPV6, MD5, SHA1, SHA256, URL.",
    ]


def test_sentinelone_valid_until_default_and_cap():
    """validUntil defaults per type and is capped at the maximum offset (30 days for IPs)."""
    emu = SentinelOneEmulator(epoch=0)
    c, auth = s1(emu)
    data = c.post(
        IOCS,
        headers=auth,
        json={
            "filter": {"accountIds": [emu.account_id]},
            "data": [ioc("192.0.2.1", "IPV4"), ioc("192.0.2.2", "IPV4", validUntil="1971-01-01T00:00:00Z")],
        },
    ).json()["data"]
    assert [d["validUntil"] for d in data] == ["1970-01-15T00:00:00.000000Z", "1970-01-31T00:00:00.000000Z"]


def test_sentinelone_scope_token_expiry_and_empty_file_hash():
    """Another account is 403; an expired token 401; the empty-file hash is refused."""
    emu = SentinelOneEmulator()
    c, auth = s1(emu)
    other = c.post(IOCS, headers=auth, json={"filter": {"accountIds": ["9"]}, "data": [ioc("a" * 64)]})
    assert other.status_code == 403 and other.json()["errors"][0]["code"] == 4030010
    empty = c.post(
        IOCS,
        headers=auth,
        json={"filter": {"accountIds": [emu.account_id]}, "data": [ioc("d41d8cd98f00b204e9800998ecf8427e", "MD5")]},
    )
    assert empty.json()["errors"][0]["detail"] == "data.0.value: hashes_empty_file"
    emu.expire_token()
    assert c.get(IOCS, headers=auth, params={"accountIds": emu.account_id}).status_code == 401


def test_sentinelone_delete_needs_a_selector_and_reports_affected():
    """DELETE with only a scope is refused; with value__in it answers data.affected."""
    emu = SentinelOneEmulator()
    c, auth = s1(emu)
    scope = {"accountIds": [emu.account_id]}
    c.post(IOCS, headers=auth, json={"filter": scope, "data": [ioc("a" * 64), ioc("b" * 64)]})
    assert c.request("DELETE", IOCS, headers=auth, json={"filter": scope}).status_code == 400
    r = c.request("DELETE", IOCS, headers=auth, json={"filter": {**scope, "value__in": ["a" * 64, "c" * 64]}})
    assert r.json() == {"data": {"affected": 1}} and emu.values() == {"b" * 64}


def test_sentinelone_limit_over_1000_is_refused():
    """GET with limit above 1000 is a validation error."""
    emu = SentinelOneEmulator()
    c, auth = s1(emu)
    r = c.get(IOCS, headers=auth, params={"accountIds": emu.account_id, "limit": 1001})
    assert r.status_code == 400


@pytest.mark.parametrize("status", [500, 503])
def test_sentinelone_injected_server_errors(status):
    """fail_next answers the next call with that 5xx in the errors envelope."""
    emu = SentinelOneEmulator()
    emu.fail_next.append(status)
    c, auth = s1(emu)
    r = c.get("/web/api/v2.1/threats", headers=auth)
    assert r.status_code == status and r.json()["errors"][0]["title"] == "Server Error"
