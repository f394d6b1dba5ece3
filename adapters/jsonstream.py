"""JSON parsed while it downloads: the items of the list at a path, one at a time, within caps.

Shared by the adapters that read large JSON bodies: the ``feed`` adapter's
JSON feeds and MISP feed manifests, and TAXII pages. ijson's yajl2 C backend
turns the bytes into parse events as they are fed; ``JsonStream`` walks those
events down ``path`` and builds one item at a time, so memory holds one chunk
and the items not yet handed out, whatever the document's size (a 256 MiB
array of short strings must not become 256 MiB of Python objects). It is
bounded: an item, or a single token (yajl buffers a token until it ends), over
``MAX_ITEM`` bytes, or nesting deeper than ``MAX_DEPTH``, fails the document
(``JsonError``) instead of growing.

Semantics are those of decoding the whole document: ``path`` walks object
keys; with an empty path, a top-level object's values are the items (or its
``(key, value)`` pairs with ``pairs``); anything else at the path "is not a
list"; an undecodable or truncated document is "bad JSON" (and that wins over
a path that does not fit, which is only reported once the document proved
valid). With ``optional`` a document without the path has no items (a TAXII
envelope without ``objects``). ``fields`` names top-level keys whose scalar
values are kept in ``.fields`` as they pass (TAXII's ``more`` and ``next``,
before or after the list). One difference: if a key on the path occurs twice,
the first occurrence is used (a whole-document decode keeps the last). No I/O
here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import ijson

__all__ = ["BACKEND", "MAX_DEPTH", "MAX_ITEM", "JsonError", "JsonStream"]


class JsonError(ValueError):
    """The document cannot be parsed, or does not fit the path (the message says why)."""


# ijson picks its fastest backend: yajl2_c (shipped in its wheels) parses ~20x faster
# than the pure-Python fallback; tests/test_feed_json.py checks this is the one in use.
BACKEND = ijson.backend
MAX_ITEM = 1 << 20  # a record over 1 MiB is not a record of any feed or API ctd reads
MAX_DEPTH = 64
SLICE = 1 << 16  # bytes fed to the parser at a time, the granularity of the token cap

_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))

# Where the walk is: the node at path[:level] comes next (VALUE); inside the
# map at path[:level] (KEYS); skipping a sibling value in that map (SKIP);
# directly inside the target list (ITEMS); inside one item (ITEM); past the target (AFTER).
VALUE, KEYS, SKIP, ITEMS, ITEM, AFTER = range(6)


class JsonStream:
    """Feed bytes, get the completed items at ``path`` (raises JsonError).

    ``name`` is what errors call the path (the ``feed`` adapter's key ``json_path``).
    """

    def __init__(
        self,
        path: tuple[str, ...],
        *,
        name: str = "json_path",
        optional: bool = False,
        pairs: bool = False,
        fields: Collection[str] = (),
    ) -> None:
        self.path = path
        self.name = name
        self.optional = optional
        self.pairs = pairs and not path  # (key, value) items of a top-level object
        self.wanted = frozenset(fields)
        self.fields: dict[str, Any] = {}  # the top-level scalars named in ``fields``, once seen
        self._top_key: Any = None  # the key of the top-level value being read (for ``fields``)
        self._top_depth = 0
        self.key: Any = None  # the key of the item being built (``pairs``)
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
        self.error: str | None = None  # the path does not fit; raised once the document proved valid

    def feed(self, data: bytes) -> list[Any]:
        """The items completed by ``data`` (in document order)."""
        for i in range(0, len(data), SLICE):
            piece = data[i : i + SLICE]
            try:
                self.coro.send(piece)
            except ijson.JSONError as exc:
                raise JsonError(f"bad JSON: {_first_line(exc)}") from None
            if not self.events:
                self.quiet += len(piece)
                if self.quiet > MAX_ITEM:
                    raise JsonError(f"bad JSON: a token (or a run of spaces) is longer than {MAX_ITEM} bytes")
                continue
            self.quiet = 0
            if self.wanted:
                self._top(self.events)
            self._walk(self.events)
            del self.events[:]
        out, self.out = self.out, []
        return out

    def finish(self) -> list[Any]:
        """The last items; raises JsonError if the document is incomplete."""
        try:
            self.coro.close()
        except ijson.JSONError as exc:
            raise JsonError(f"bad JSON: {_first_line(exc)}") from None
        if self.wanted:
            self._top(self.events)
        self._walk(self.events)
        del self.events[:]
        if self.error is not None:
            raise JsonError(self.error)
        if self.mode != AFTER:  # the parser accepted a document the walk did not finish: cannot happen
            raise JsonError("bad JSON: the document ended early")
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
                        raise JsonError(f"bad JSON: nested too deeply (more than {MAX_DEPTH} levels)")
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
                            out.append((self.key, self.item) if self.pairs else self.item)
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
                        raise JsonError(f"an item of {self.name} {self._where()!r} is larger than {MAX_ITEM} bytes")
                elif mode == ITEMS:
                    if ev in _OPEN:
                        self.item = {} if ev == "start_map" else []
                        stack[:], keys[:], cost, mode = [self.item], [None], 0, ITEM
                    elif ev in _CLOSE:
                        mode = AFTER
                    elif ev == "map_key":  # keys of a top-level object are not items, but name them
                        self.key = val
                    else:  # a scalar item
                        out.append((self.key, val) if self.pairs else val)
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
                        mode = self._miss(absent=True)
                elif self.level == len(path):  # VALUE: the node at the path itself
                    if ev == "start_array" or (ev == "start_map" and not path):
                        mode = ITEMS
                    else:
                        self.error, mode = f"{self.name} {self._where()!r} is not a list", AFTER
                elif ev == "start_map":  # VALUE: a map on the way down
                    mode = KEYS
                else:
                    mode = self._miss(absent=False)
        finally:
            self.mode, self.depth, self.cost = mode, depth, cost

    def _miss(self, absent: bool) -> int:
        """No key path[level] here (``absent``: a map without it; else not a map at all): an error unless
        the path is optional and only absent, or the document is bad JSON anyway; skip the rest."""
        if not (absent and self.optional):
            self.error = f"{self.name}: no key {'.'.join(self.path[: self.level + 1])!r}"
        return AFTER

    def _top(self, events: list[tuple[str, Any]]) -> None:
        """Keep the top-level scalars named in ``fields`` (a second, cheap pass over the same events)."""
        depth, key, wanted = self._top_depth, self._top_key, self.wanted
        for ev, val in events:
            if ev in _OPEN:
                depth += 1
                key = None if depth > 1 else key  # a container value is not a field
            elif ev in _CLOSE:
                depth -= 1
            elif depth == 1:
                if ev == "map_key":
                    key = val
                elif key in wanted:
                    self.fields[key] = val
        self._top_depth, self._top_key = depth, key


def _first_line(exc: BaseException) -> str:
    """A parser's message on one line (yajl adds a second line pointing at the spot)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:300] if lines else type(exc).__name__
