"""JSON feeds, parsed while they download: the items of the list at ``json_path``.

The incremental parser, its caps (``MAX_ITEM`` per item or token, ``MAX_DEPTH``
levels) and its semantics are the adapters' shared ``ctd.adapters.jsonstream``;
here it reads a feed's ``json_path`` and its errors are the feed's
``FormatError``. The mapping of items to sightings is ``json_records``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ctd.adapters import jsonstream
from ctd.adapters.feed.records import Column, FormatError, Spec, issues_at, map_record
from ctd.adapters.feed.records import rejected as record_rejected
from ctd.adapters.file.formats import BadRecord, show
from ctd.model import Rejected, Sighting

BACKEND = jsonstream.BACKEND
MAX_ITEM = jsonstream.MAX_ITEM
MAX_DEPTH = jsonstream.MAX_DEPTH
SLICE = jsonstream.SLICE


class JsonStream:
    """Feed bytes, get the completed items at ``spec.json_path`` (raises FormatError)."""

    def __init__(self, spec: Spec) -> None:
        self._stream = jsonstream.JsonStream(spec.json_path)

    def feed(self, data: bytes) -> list[Any]:
        """The items completed by ``data`` (in document order)."""
        try:
            return self._stream.feed(data)
        except jsonstream.JsonError as exc:
            raise FormatError(str(exc)) from None

    def finish(self) -> list[Any]:
        """The last items; raises FormatError if the document is incomplete."""
        try:
            return self._stream.finish()
        except jsonstream.JsonError as exc:
            raise FormatError(str(exc)) from None


def json_items(data: bytes, spec: Spec) -> list[Any]:
    """The list at ``json_path`` in a whole JSON document (raises FormatError)."""
    stream = JsonStream(spec)
    items = stream.feed(data)
    return items + stream.finish()


def _dotted(obj: Any, path: Column) -> Any:
    if isinstance(path, int):
        return obj[path] if isinstance(obj, list) and path < len(obj) else None
    for key in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _present(obj: dict, path: Column) -> bool:
    if isinstance(path, int):
        return False
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return False
        obj = obj[key]
    return True


def json_item(item: Any, where: str, spec: Spec, now: int, out: list[Sighting], rejected: list[Rejected]) -> int:
    """Map one item into ``out``/``rejected``; returns how many objects were skipped as not records.

    An object is a record; a bare string is a value; a list holds records (the
    ThreatFox export keys a list of one IoC by its id). An object without any
    of the value fields is not a record (a metadata line) and is skipped.
    """
    if isinstance(item, list):
        skipped = 0
        for i, sub in enumerate(item):
            if isinstance(sub, (dict, str)):
                skipped += json_item(sub, f"{where}[{i}]", spec, now, out, rejected)
            else:
                rejected.append(Rejected(where=f"{where}[{i}]", reason=f"not an object: {show(str(sub))}"))
        return skipped
    obj: Any
    if isinstance(item, dict):
        paths = [c for _, c in spec.template if c is not None] or spec.fields.get("value", ())
        if not any(_present(item, p) for p in paths):
            return 1
        obj, s = item, spec
    elif isinstance(item, str):
        obj, s = [item], msgspec.structs.replace(spec, fields={"value": (0,)}, template=())
    else:
        rejected.append(Rejected(where=where, reason=f"not an object: {show(str(item))}"))
        return 0
    try:
        sightings, issues = map_record(lambda p: _dotted(obj, p), s, now)
    except BadRecord as exc:
        rejected.append(record_rejected(where, exc))
        return 0
    out.extend(sightings)
    rejected.extend(issues_at(where, issues))
    return 0


def json_records(items: list[Any], start: int, spec: Spec, now: int) -> tuple[list[Sighting], list[Rejected], int]:
    """Map ``items``; ``start`` numbers them. Returns sightings, rejections and how many were no records."""
    out: list[Sighting] = []
    rejected: list[Rejected] = []
    skipped = 0
    for n, item in enumerate(items, start):
        skipped += json_item(item, f"item {n}", spec, now, out, rejected)
    return out, rejected, skipped
