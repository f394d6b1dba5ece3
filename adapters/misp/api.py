"""MISP's REST API as the ``misp`` adapter calls it: one method per endpoint, failures as ctd errors.

Auth is MISP's API key in the ``Authorization`` header. Beware: MISP answers
403 both for a bad key and for a refused save (``saved: false`` + ``errors``);
only the first is an ``AuthError``; the second comes back to the caller, as
does a 404 (an event that is gone, or a search that found nothing).
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ctd.adapters.http import map_http_errors, raise_for_status
from ctd.adapters.misp import mapping as m
from ctd.model import AuthError, Secret, UpstreamDataError

NOT_MISP = "is `url` the MISP base url?"


class MispApi:
    def __init__(self, client: httpx.AsyncClient, url: str, api_key: Secret) -> None:
        self.client = client
        self.base = url.rstrip("/")
        self._headers = {"Authorization": api_key, "Accept": "application/json", "Content-Type": "application/json"}

    async def call(self, method: str, path: str, what: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON) for 2xx, 403 save failures and 404."""
        with map_http_errors(what):
            resp = await self.client.request(method, self.base + path, json=body, headers=self._headers)
        data: Any = None
        if resp.content:
            try:
                data = msgspec.json.decode(resp.content)
            except msgspec.DecodeError:
                data = None
                if resp.status_code < 300:
                    raise UpstreamDataError(f"{what}: the reply is not JSON ({NOT_MISP})") from None
            except RecursionError:
                raise UpstreamDataError(f"{what}: the reply is nested too deeply to parse") from None
        code = resp.status_code
        if code == 403 and m.is_save_failure(data):
            return code, data
        if code in (401, 403):
            detail = data.get("message") or data.get("name") if isinstance(data, dict) else None
            raise AuthError(f"{what}: HTTP {code}" + (f": {str(detail)[:200]}" if detail else ""))
        if code == 404:
            return code, data
        raise_for_status(resp, what)
        return code, data

    async def version(self) -> str:
        """``GET /servers/getVersion``: the key works and the instance answers."""
        code, data = await self.call("GET", "/servers/getVersion", "MISP servers/getVersion")
        if code == 404 or not isinstance(data, dict) or "version" not in data:
            raise UpstreamDataError(f"MISP servers/getVersion: no version in the reply ({NOT_MISP})")
        return str(data["version"])

    async def search_attributes(self, body: dict[str, Any], what: str, *, missing_ok: bool) -> list[dict[str, Any]]:
        """``POST /attributes/restSearch``; a 404 is "none" when ``missing_ok``, else the wrong url."""
        code, data = await self.call("POST", "/attributes/restSearch", what, body)
        if code == 404:
            if missing_ok:
                return []
            raise UpstreamDataError(f"{what}: HTTP 404 ({NOT_MISP})")
        try:
            return m.attributes_of(data)
        except ValueError as exc:
            raise UpstreamDataError(f"{what}: {exc}") from exc

    async def find_events(self, name: str) -> list[str]:
        """Ids of the events named exactly ``name``, the oldest first (``eventinfo`` is a LIKE filter)."""
        what = f"MISP events/restSearch {name!r}"
        body = {"returnFormat": "json", "eventinfo": name, "metadata": 1, "limit": 100, "page": 1}
        code, data = await self.call("POST", "/events/restSearch", what, body)
        found = data.get("response", data) if isinstance(data, dict) else data
        if code == 404 or not isinstance(found, list):
            raise UpstreamDataError(f"{what}: not an event list")
        return sorted(
            (
                str(e["Event"]["id"])
                for e in found
                if isinstance(e, dict)
                and isinstance(e.get("Event"), dict)
                and e["Event"].get("info") == name
                and e["Event"].get("id") is not None
            ),
            key=lambda s: (len(s), s),
        )

    async def add_event(self, event: dict[str, Any]) -> str:
        """``POST /events/add``: the new event's id."""
        what = f"MISP events/add {event['info']!r}"
        code, data = await self.call("POST", "/events/add", what, {"Event": event})
        new = data.get("Event") if isinstance(data, dict) else None
        if code != 200 or not isinstance(new, dict) or new.get("id") is None:
            reason = m.reason_of(data.get("errors")) if isinstance(data, dict) else f"HTTP {code}"
            raise UpstreamDataError(f"{what}: event not created: {reason}")
        return str(new["id"])

    async def publish(self, event_id: str) -> None:
        await self.call("POST", f"/events/publish/{event_id}", f"MISP events/publish/{event_id}")

    async def add_attributes(self, event_id: str, sent: list[dict[str, Any]]) -> dict[int, str] | None:
        """``POST /attributes/add/ID``: MISP's reasons by index in ``sent``; None if the event is gone."""
        what = f"MISP attributes/add/{event_id} ({len(sent)} attributes)"
        code, data = await self.call("POST", f"/attributes/add/{event_id}", what, sent)
        if code == 404:
            return None
        return m.add_failures(data, sent)

    async def delete_attributes(self, event_id: str, ids: list[str]) -> tuple[int, Any]:
        """``POST /attributes/deleteSelected/ID`` (soft delete): the status and MISP's reply."""
        what = f"MISP attributes/deleteSelected/{event_id} ({len(ids)} attributes)"
        body = {"id": ids, "event_id": event_id, "allow_hard_delete": False}
        return await self.call("POST", f"/attributes/deleteSelected/{event_id}", what, body)
