"""A MISP REST API emulator (``httpx.MockTransport`` handler), from MISP's documented API.

Covers what a threat-exchange client uses: ``GET /servers/getVersion``,
``POST /attributes/restSearch`` (filters, ``limit``/``page``, tags with ``!``
negation, ``deleted``, warninglists, decay scores), ``POST /events/restSearch``
(``eventinfo``), ``POST /events/add``, ``POST /attributes/add/<event_id>``
(one attribute or a list; per-attribute validation errors as ``attribute_<i>``),
``POST /attributes/deleteSelected/<event_id>`` (soft delete) and
``POST /events/publish/<id>``.

Behaviour follows MISP 2.4/2.5 (AppController, AttributesController,
RestResponseComponent): a bad ``Authorization`` key is a 403 with
``{"name", "message", "url"}``; a refused save is also a 403, with
``saved: false`` and ``errors``; a missing ``Accept: application/json`` is
not a REST call (redirect to the login page). Rate limiting comes from a
reverse proxy in front of MISP: 429 with ``Retry-After`` (``throttle``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from typing import Any

import httpx

AUTH_FAILED = (
    "Authentication failed. Please make sure you pass the API key of an API enabled user along in the "
    "Authorization header."
)
DUPLICATE = "A similar attribute already exists for this event."
BAD_VALUE = 'Value not in the right type/format. Please double check the value or select type "other".'

_HEX = {"md5": 32, "sha1": 40, "sha256": 64}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}$", re.I)
_DEFAULT_CATEGORY = {"md5": "Payload delivery", "sha1": "Payload delivery", "sha256": "Payload delivery"}


_POST_ROUTES = {
    "attributes/restSearch",
    "events/restSearch",
    "events/add",
    "attributes/add",
    "attributes/deleteSelected",
    "events/publish",
}


def _ip_ok(v: str) -> bool:
    try:
        ipaddress.ip_network(v, strict=False) if "/" in v else ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def valid_value(mtype: str, value: str) -> bool:
    """MISP's per-type value validation, for the types this emulator accepts."""
    first, _, second = value.partition("|")
    if mtype in ("ip-src", "ip-dst"):
        return _ip_ok(value)
    if mtype in ("ip-src|port", "ip-dst|port"):
        return _ip_ok(first) and second.isdigit()
    if mtype in ("domain", "hostname"):
        return bool(_DOMAIN.match(value))
    if mtype == "domain|ip":
        return bool(_DOMAIN.match(first)) and _ip_ok(second)
    if mtype in _HEX:
        return len(value) == _HEX[mtype] and all(c in "0123456789abcdefABCDEF" for c in value)
    if mtype.startswith("filename|"):
        h = value.rpartition("|")[2]
        return valid_value(mtype.partition("|")[2], h)
    if mtype in ("email", "email-src", "email-dst"):
        return value.count("@") == 1 and bool(_DOMAIN.match(value.partition("@")[2]))
    if mtype == "url":
        return bool(value) and " " not in value
    return True


def _listify(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


class MispEmulator:
    """State (events, attributes, tags) plus knobs; ``handler`` serves requests."""

    def __init__(self, api_key: str = "k" * 40, *, version: str = "2.5.2") -> None:
        self.api_key = api_key
        self.version = version
        self.events: dict[int, dict[str, Any]] = {}
        self.attributes: dict[int, dict[str, Any]] = {}
        self.warninglist: set[str] = set()
        self.undeletable: set[int] = set()  # attribute ids deleteAttribute fails on
        self.decay_threshold = 30.0  # the default model's threshold
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body)
        self.clock: Any = lambda: int(time.time())
        self._throttled: list[int] = []  # Retry-After seconds of the next 429s
        self._failures: list[int] = []  # statuses of the next failures
        self._next_event = 1
        self._next_attr = 1

    # --- knobs and helpers for tests ------------------------------------------------

    def throttle(self, times: int = 1, retry_after: int = 30) -> None:
        """The reverse proxy answers the next ``times`` requests with 429 + Retry-After."""
        self._throttled.extend([retry_after] * times)

    def fail(self, times: int = 1, status: int = 500) -> None:
        self._failures.extend([status] * times)

    def add_event(self, info: str, **fields: Any) -> int:
        eid = self._next_event
        self._next_event += 1
        self.events[eid] = {
            "id": str(eid),
            "uuid": str(uuid.uuid4()),
            "info": info,
            "orgc_id": "1",
            "org_id": "1",
            "distribution": str(fields.get("distribution", 0)),
            "threat_level_id": str(fields.get("threat_level_id", 4)),
            "analysis": str(fields.get("analysis", 0)),
            "published": bool(fields.get("published", False)),
            "timestamp": str(self.clock()),
            "date": time.strftime("%Y-%m-%d"),
        }
        return eid

    def add_attribute(
        self,
        event_id: int,
        mtype: str,
        value: str,
        *,
        category: str | None = None,
        to_ids: bool = True,
        tags: tuple[str, ...] = (),
        comment: str = "",
        timestamp: int | None = None,
        deleted: bool = False,
        score: float | None = None,
    ) -> int:
        aid = self._next_attr
        self._next_attr += 1
        self.attributes[aid] = {
            "id": str(aid),
            "event_id": str(event_id),
            "object_id": "0",
            "object_relation": None,
            "category": category or _DEFAULT_CATEGORY.get(mtype, "Network activity"),
            "type": mtype,
            "to_ids": to_ids,
            "uuid": str(uuid.uuid4()),
            "timestamp": str(timestamp or self.clock()),
            "distribution": "5",
            "sharing_group_id": "0",
            "comment": comment,
            "deleted": deleted,
            "disable_correlation": False,
            "first_seen": None,
            "last_seen": None,
            "value": value,
            "_tags": list(tags),
            "_score": score,
        }
        return aid

    def event_values(self, info: str, *, deleted: bool = False) -> list[str]:
        """Values of the (non-deleted) attributes of the event named ``info``."""
        ids = {str(e["id"]) for e in self.events.values() if e["info"] == info}
        return [a["value"] for a in self.attributes.values() if a["event_id"] in ids and a["deleted"] == deleted]

    def tags_of(self, value: str) -> list[str]:
        return next(a["_tags"] for a in self.attributes.values() if a["value"] == value)

    # --- HTTP ----------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    def _error(self, status: int, message: str, url: str) -> httpx.Response:
        return self._json(status, {"name": message, "message": message, "url": url})

    def _save_fail(self, controller: str, action: str, url: str, errors: Any) -> httpx.Response:
        name = f"Could not {action} {controller}"
        return self._json(403, {"saved": False, "name": name, "message": name, "url": url, "errors": errors})

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        if self._throttled:  # nginx/HAProxy in front of MISP, not MISP itself
            return httpx.Response(
                429,
                text="<html>429 Too Many Requests</html>",
                headers={"Retry-After": str(self._throttled.pop(0)), "Content-Type": "text/html"},
            )
        if self._failures:
            return self._error(self._failures.pop(0), "An Internal Error Has Occurred.", path)
        if path == "/users/login":
            return httpx.Response(200, text="<html>MISP login</html>", headers={"Content-Type": "text/html"})
        if "application/json" not in request.headers.get("accept", ""):
            return httpx.Response(302, headers={"Location": "/users/login"})  # not a REST call
        if request.headers.get("authorization") != self.api_key:
            return self._error(403, AUTH_FAILED, path)
        if request.method == "POST" and "application/json" not in request.headers.get("content-type", ""):
            return self._error(400, "Invalid request: expected JSON.", path)
        parts = path.strip("/").split("/")
        route = "/".join(parts[:2])
        arg = parts[2] if len(parts) > 2 else None
        if request.method == "GET" and route == "servers/getVersion":
            return self._json(
                200,
                {
                    "version": self.version,
                    "pymisp_recommended_version": self.version,
                    "perm_sync": False,
                    "perm_sighting": True,
                    "perm_galaxy_editor": False,
                    "request_encoding": ["gzip", "br"],
                    "filter_sightings": True,
                },
            )
        if route not in _POST_ROUTES:
            return self._error(404, "Not Found", path)
        if request.method != "POST":
            return self._error(405, "This function is only accessible via POST requests.", path)
        match route:
            case "attributes/restSearch":
                return self._attr_search(body or {})
            case "events/restSearch":
                return self._event_search(body or {})
            case "events/add":
                return self._event_add(body or {}, path)
            case "attributes/add":
                return self._attr_add(arg, body, path)
            case "attributes/deleteSelected":
                return self._delete_selected(arg, body or {}, path)
            case "events/publish":
                return self._publish(arg, path)
            case _:  # pragma: no cover - filtered above
                return self._error(404, "Not Found", path)

    # --- endpoints -----------------------------------------------------------------

    def _attr_search(self, q: dict[str, Any]) -> httpx.Response:
        if q.get("returnFormat", "json") != "json":
            return self._error(400, "Unsupported returnFormat in this emulator.", "/attributes/restSearch")
        deleted = {bool(d) for d in _listify(q.get("deleted", 0))}
        types, cats = set(_listify(q.get("type"))), set(_listify(q.get("category")))
        values = set(_listify(q.get("value")))
        events = {str(e) for e in _listify(q.get("eventid"))}
        tags = [str(t) for t in _listify(q.get("tags"))]
        want = [t for t in tags if not t.startswith("!")]
        never = {t[1:] for t in tags if t.startswith("!")}
        window = q.get("attribute_timestamp")
        threshold = float((q.get("modelOverrides") or {}).get("threshold", self.decay_threshold))
        out = []
        for aid in sorted(self.attributes):
            a = self.attributes[aid]
            ev = self.events[int(a["event_id"])]
            if (
                a["deleted"] not in deleted
                or (types and a["type"] not in types)
                or (cats and a["category"] not in cats)
            ):
                continue
            if values and a["value"] not in values or events and a["event_id"] not in events:
                continue
            if (want and not set(want) & set(a["_tags"])) or never & set(a["_tags"]):
                continue
            if window is not None and not int(window[0]) <= int(a["timestamp"]) <= int(window[1]):
                continue
            if "to_ids" in q and bool(int(q["to_ids"])) != a["to_ids"]:
                continue
            if "published" in q and q["published"] is not None and bool(int(q["published"])) != ev["published"]:
                continue
            if int(q.get("enforceWarninglist") or 0) and a["value"] in self.warninglist:
                continue
            score = a["_score"]
            if int(q.get("excludeDecayed") or 0) and score is not None and score < threshold:
                continue
            item = {k: v for k, v in a.items() if not k.startswith("_")}
            item["Event"] = {k: ev[k] for k in ("org_id", "distribution", "id", "info", "orgc_id", "uuid")}
            if a["_tags"]:
                item["Tag"] = [
                    {"id": str(i + 1), "name": t, "colour": "#0088cc", "numerical_value": None}
                    for i, t in enumerate(a["_tags"])
                ]
            if int(q.get("includeDecayScore") or 0) and score is not None:
                item["decay_score"] = [
                    {
                        "score": score,
                        "base_score": 80,
                        "decayed": score < threshold,
                        "DecayingModel": {"id": "1", "name": "NIDS Simple Decaying Model"},
                    }
                ]
            out.append(item)
        total = len(out)
        limit, page = q.get("limit"), int(q.get("page") or 1)
        if limit:
            out = out[(page - 1) * int(limit) : page * int(limit)]
        return self._json(200, {"response": {"Attribute": out}}, headers={"X-Result-Count": str(total)})

    def _event_search(self, q: dict[str, Any]) -> httpx.Response:
        info = q.get("eventinfo")
        out = []
        for eid in sorted(self.events):
            ev = self.events[eid]
            if info is not None:
                pattern = re.escape(str(info).lower()).replace("%", ".*").replace("_", ".")
                if not re.fullmatch(pattern, ev["info"].lower()):  # SQL LIKE, case-insensitive
                    continue
            out.append({"Event": dict(ev)})
        limit, page = q.get("limit"), int(q.get("page") or 1)
        if limit:
            out = out[(page - 1) * int(limit) : page * int(limit)]
        return self._json(200, {"response": out})

    def _event_add(self, body: dict[str, Any], path: str) -> httpx.Response:
        ev = body.get("Event", body)
        if not ev.get("info"):
            return self._save_fail("Event", "add", path, {"info": ["Info cannot be empty."]})
        eid = self.add_event(
            ev["info"],
            distribution=ev.get("distribution", 0),
            threat_level_id=ev.get("threat_level_id", 4),
            analysis=ev.get("analysis", 0),
            published=ev.get("published", False),
        )
        return self._json(200, {"Event": dict(self.events[eid])})

    def _attr_add(self, event_id: str | None, body: Any, path: str) -> httpx.Response:
        if not event_id or not event_id.isdigit() or int(event_id) not in self.events:
            return self._error(404, "Invalid event", path)
        if isinstance(body, dict) and "Attribute" in body:
            body = body["Attribute"]
        attrs = body if isinstance(body, list) else [body]
        fails: dict[str, Any] = {}
        added: list[int] = []
        present = {
            (o["type"], o["value"], o["category"])
            for o in self.attributes.values()
            if o["event_id"] == event_id and not o["deleted"]
        }
        for k, a in enumerate(attrs):
            mtype, value = a.get("type"), str(a.get("value", "")).strip()
            errors: dict[str, list[str]] = {}
            if not value:
                errors["value"] = ["Value cannot be empty."]
            elif not valid_value(str(mtype), value):
                errors["value"] = [BAD_VALUE]
            else:
                category = a.get("category") or _DEFAULT_CATEGORY.get(mtype, "Network activity")
                if (mtype, value, category) in present:
                    errors["value"] = [DUPLICATE]
            tags = [t["name"] for t in a.get("Tag", []) if isinstance(t, dict)]
            if any(len(t) > 255 for t in tags):
                errors["Tag"] = ["Tag name too long."]
            if errors:
                fails[f"attribute_{k}"] = errors
                continue
            added.append(
                self.add_attribute(
                    int(event_id),
                    mtype,
                    value,
                    category=a.get("category"),
                    to_ids=bool(a.get("to_ids", True)),
                    tags=tuple(tags),
                    comment=a.get("comment", ""),
                )
            )
            present.add((mtype, value, self.attributes[added[-1]]["category"]))
        if added:
            self.events[int(event_id)]["published"] = False  # adding unpublishes the event
            saved = [self._public(self.attributes[i]) for i in added]
            data: dict[str, Any] = {"Attribute": saved[0] if len(saved) == 1 else saved}
            if fails:
                data["errors"] = fails
            return self._json(200, data)
        return self._save_fail("Attribute", "add", path, fails["attribute_0"] if len(attrs) == 1 else fails)

    def _public(self, a: dict[str, Any]) -> dict[str, Any]:
        item = {k: v for k, v in a.items() if not k.startswith("_")}
        if a["_tags"]:
            item["Tag"] = [{"id": str(i + 1), "name": t} for i, t in enumerate(a["_tags"])]
        return item

    def _delete_selected(self, event_id: str | None, body: dict[str, Any], path: str) -> httpx.Response:
        ids = body.get("id", body)
        event_id = event_id or (str(body.get("event_id")) if body.get("event_id") is not None else None)
        if not ids:
            return self._error(404, "No matching attributes found.", path)
        if not event_id:
            return self._error(405, "No event ID set.", path)
        if int(event_id) not in self.events:
            return self._error(404, "Invalid event", path)
        hard_ok = bool(body.get("allow_hard_delete"))
        ids = [int(i) for i in _listify(ids)]
        matching = [
            i
            for i in ids
            if i in self.attributes
            and self.attributes[i]["event_id"] == event_id
            and (hard_ok or not self.attributes[i]["deleted"])
        ]
        if not matching:
            return self._error(404, "No matching attributes found.", path)
        ok = []
        for i in matching:
            if i in self.undeletable:
                continue
            self.attributes[i]["deleted"] = True
            self.attributes[i]["timestamp"] = str(self.clock())
            ok.append(i)
        fails = [i for i in ids if i not in ok]
        if not fails:
            msg = f"{len(ok)} attribute deleted." if len(ok) == 1 else f"{len(ok)} attributes deleted"
            return self._json(
                200,
                {
                    "saved": True,
                    "success": True,
                    "name": msg,
                    "message": msg,
                    "url": f"/attributes/deleteSelected/{event_id}",
                    "id": event_id,
                },
            )
        msg = (
            f"{len(ok)} attribute{'s' if len(ok) != 1 else ''} deleted, but {len(fails)} "
            f"attribute{'s' if len(fails) != 1 else ''} could not be deleted."
        )
        return self._save_fail("Attribute", "deleteSelected", path, msg)

    def _publish(self, event_id: str | None, path: str) -> httpx.Response:
        if not event_id or not event_id.isdigit() or int(event_id) not in self.events:
            return self._error(404, "Invalid event.", path)
        self.events[int(event_id)]["published"] = True
        return self._json(
            200,
            {
                "saved": True,
                "success": True,
                "name": "Job queued",
                "message": "Job queued",
                "url": f"/events/publish/{event_id}",
                "id": event_id,
            },
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


class Throttled:
    """A MISP behind a reverse proxy that allows ``budget`` requests, then answers 429 + Retry-After."""

    def __init__(self, emu: MispEmulator, budget: int | None) -> None:
        self.emu = emu
        self.left = budget

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if self.left is not None:
            if self.left <= 0:
                self.emu.throttle(1)
            else:
                self.left -= 1
        return await self.emu.handler(request)


def standalone(opts: Any) -> tuple[Throttled, dict[str, Any]]:
    """An emulator for ``python -m tests.emulators.misp``: one event with demo ip-dst attributes."""
    emu = MispEmulator()
    eid = emu.add_event("demo event")
    for i in range(opts.seed):
        emu.add_attribute(eid, "ip-dst", f"192.0.2.{i + 1}")
    return Throttled(emu, opts.rate_limit), {
        "header": "Authorization",
        "api_key": emu.api_key,
        "accept": "application/json",
    }


if __name__ == "__main__":
    from tests.emulators import serve

    raise SystemExit(serve.main("misp", standalone))
