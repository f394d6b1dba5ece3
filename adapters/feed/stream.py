"""JSON feeds, parsed while they download: the items of the list at ``json_path``.

ijson's yajl2 C backend turns the bytes into parse events as they are fed;
``JsonStream`` walks those events down ``json_path`` and builds one item at a
time, so memory holds one chunk and the items not yet handed out, whatever the
document's size (a 256 MiB array of short strings must not become 256 MiB of
Python objects). It is bounded: an item, or a single token (yajl buffers a
token until it ends), over ``MAX_ITEM`` bytes, or nesting deeper than
``MAX_DEPTH``, fails the document instead of growing.

Semantics are those of decoding the whole document: ``json_path`` walks object
keys; without one, a top-level object's values are the items (ThreatFox's
export keyed by id); anything else at the path "is not a list"; an undecodable
or truncated document is "bad JSON" (and that wins over a path that does
not fit, which is only reported once the document proved valid). One difference: if a key on the path
occurs twice, the first occurrence is used (a whole-document decode keeps the
last). No I/O here; the mapping of items to sightings is ``json_records``.
"""

from __future__ import annotations

from typing import Any

import ijson
import msgspec

from ctd.adapters.feed.records import Column, FormatError, Spec, first_line, issues_at, map_record
from ctd.adapters.feed.records import rejected as record_rejected
from ctd.adapters.file.formats import BadRecord, show
from ctd.model import Rejected, Sighting

# ijson picks its fastest backend: yajl2_c (shipped in its wheels) parses ~20x faster
# than the pure-Python fallback; tests/test_feed_json.py checks this is the one in use.
BACKEND = ijson.backend
MAX_ITEM = 1 << 20  # like MAX_LINE: a record over 1 MiB is not a feed record
MAX_DEPTH = 64
SLICE = 1 << 16  # bytes fed to the parser at a time, the granularity of the token cap

_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))

# Where the walk is: the node at json_path[:level] comes next (VALUE); inside the
# map at json_path[:level] (KEYS); skipping a sibling value in that map (SKIP);
# directly inside the target list (ITEMS); inside one item (ITEM); past the target (AFTER).
VALUE, KEYS, SKIP, ITEMS, ITEM, AFTER = range(6)


class JsonStream:
    """Feed bytes, get the completed items at ``spec.json_path`` (raises FormatError)."""

    def __init__(self, spec: Spec) -> None:
        self.path = spec.json_path
        self.events = ijson.sendable_list()
        self.coro = ijson.basic_parse_coro(self.events, use_float=True)
        self.mode = VALUE
        self.level = 0  # keys of json_path matched so far
        self.depth = 0  # the parser's nesting depth
        self.skip_at = 0  # the depth of the map whose sibling value is being skipped
        self.stack: list[Any] = []  # containers of the item being built, innermost last
        self.keys: list[Any] = []  # the pending key of each map in ``stack``
        self.item: Any = None
        self.cost = 0  # about the bytes of the item being built
        self.quiet = 0  # bytes fed since the parser last produced an event
        self.out: list[Any] = []
        self.error: str | None = None  # json_path does not fit; raised once the document proved valid

    def feed(self, data: bytes) -> list[Any]:
        """The items completed by ``data`` (in document order)."""
        for i in range(0, len(data), SLICE):
            piece = data[i : i + SLICE]
            try:
                self.coro.send(piece)
            except ijson.JSONError as exc:
                raise FormatError(f"bad JSON: {first_line(exc)}") from None
            if not self.events:
                self.quiet += len(piece)
                if self.quiet > MAX_ITEM:
                    raise FormatError(f"bad JSON: a token (or a run of spaces) is longer than {MAX_ITEM} bytes")
                continue
            self.quiet = 0
            self._walk(self.events)
            del self.events[:]
        out, self.out = self.out, []
        return out

    def finish(self) -> list[Any]:
        """The last items; raises FormatError if the document is incomplete."""
        try:
            self.coro.close()
        except ijson.JSONError as exc:
            raise FormatError(f"bad JSON: {first_line(exc)}") from None
        self._walk(self.events)
        del self.events[:]
        if self.error is not None:
            raise FormatError(self.error)
        if self.mode != AFTER:  # the parser accepted a document the walk did not finish: cannot happen
            raise FormatError("bad JSON: the document ended early")
        out, self.out = self.out, []
        return out

    def _where(self) -> str:
        return ".".join(self.path) or "(document)"

    def _walk(self, events: list[tuple[str, Any]]) -> None:
        # The hot loop: one pass per event, state in locals (item internals are most events).
        path, out, stack, keys = self.path, self.out, self.stack, self.keys
        mode, depth, cost = self.mode, self.depth, self.cost
        try:
            for ev, val in events:
                if ev in _OPEN:
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise FormatError(f"bad JSON: nested too deeply (more than {MAX_DEPTH} levels)")
                elif ev in _CLOSE:
                    depth -= 1
                if mode == ITEM:
                    if ev == "map_key":
                        keys[-1] = val
                        cost += len(val) + 4
                        continue
                    if ev in _CLOSE:
                        stack.pop()
                        keys.pop()
                        if not stack:
                            out.append(self.item)
                            mode = ITEMS
                        continue
                    if ev in _OPEN:
                        node: Any = {} if ev == "start_map" else []
                        cost += 2
                    else:
                        node = val
                        cost += len(val) + 3 if ev == "string" else 8
                    top = stack[-1]
                    if type(top) is list:
                        top.append(node)
                    else:
                        top[keys[-1]] = node
                    if ev in _OPEN:
                        stack.append(node)
                        keys.append(None)
                    if cost > MAX_ITEM:
                        raise FormatError(f"an item of json_path {self._where()!r} is larger than {MAX_ITEM} bytes")
                elif mode == ITEMS:
                    if ev in _OPEN:
                        self.item = {} if ev == "start_map" else []
                        stack[:], keys[:], cost, mode = [self.item], [None], 0, ITEM
                    elif ev in _CLOSE:
                        mode = AFTER
                    elif ev != "map_key":  # a scalar item (keys of a top-level object are not items)
                        out.append(val)
                elif mode == AFTER:
                    continue
                elif mode == SKIP:
                    if depth == self.skip_at and ev not in _OPEN:
                        mode = KEYS  # the skipped value ended
                elif mode == KEYS:
                    if ev == "map_key":
                        if val == path[self.level]:
                            self.level += 1
                            mode = VALUE
                        else:
                            mode, self.skip_at = SKIP, depth
                    elif ev == "end_map":
                        mode = self._miss()
                elif self.level == len(path):  # VALUE: the node at json_path itself
                    if ev == "start_array" or (ev == "start_map" and not path):
                        mode = ITEMS
                    else:
                        self.error, mode = f"json_path {self._where()!r} is not a list", AFTER
                elif ev == "start_map":  # VALUE: a map on the way down
                    mode = KEYS
                else:
                    mode = self._miss()
        finally:
            self.mode, self.depth, self.cost = mode, depth, cost

    def _miss(self) -> int:
        """No key json_path[level] here: an error unless the document is bad JSON anyway; skip the rest."""
        self.error = f"json_path: no key {'.'.join(self.path[: self.level + 1])!r}"
        return AFTER


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
