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
from ctd.adapters.feed.records import Column, FormatError, Parsed, Spec, map_record
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


def json_records(items: list[Any], start: int, spec: Spec, now: int) -> Parsed:
    """Map ``items`` (objects, or bare strings taken as values); ``start`` numbers them."""
    out: list[Sighting] = []
    rejected: list[Rejected] = []
    bare = Spec(**{**msgspec.structs.asdict(spec), "fields": {"value": (0,)}})
    for n, item in enumerate(items, start):
        where = f"item {n}"
        obj: Any
        if isinstance(item, dict):
            obj, s = item, spec
        elif isinstance(item, str):
            obj, s = [item], bare
        else:
            rejected.append(Rejected(where=where, reason=f"not an object: {show(str(item))}"))
            continue
        try:
            sightings, reasons = map_record(lambda p: _dotted(obj, p), s, now)  # noqa: B023  (called at once)
        except BadRecord as exc:
            rejected.append(Rejected(where=where, reason=str(exc)))
            continue
        out.extend(sightings)
        rejected.extend(Rejected(where=where, reason=r) for r in reasons)
    return out, rejected
