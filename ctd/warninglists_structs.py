"""Building blocks of ctd.warninglists: compact sets, network segments, MISP regexes, substring tries.

Pure and independent of the list files; split out to keep ``ctd/warninglists.py`` readable.
"""

from __future__ import annotations

import re
import socket
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from heapq import heappop, heappush

__all__ = ["NO_HIT", "Compact", "ip_int", "network", "pcre", "segments", "trie_regex"]

NO_HIT = 1 << 30  # "no list": larger than any list id, so the smallest id wins


def pcre(pattern: str) -> re.Pattern[str] | None:
    """A Python regex for MISP's ``/body/flags``; None if it is not one or does not compile."""
    if len(pattern) < 2 or pattern[0] != "/" or pattern.rfind("/") == 0:
        return None
    end = pattern.rfind("/")
    flags = 0
    for f in pattern[end + 1 :]:
        flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}.get(f, 0)
    try:
        return re.compile(pattern[1:end], flags)
    except re.error:
        return None


def trie_regex(needles: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any needle: a trie, so the engine walks each start once."""
    trie: dict = {}
    for n in needles:
        node = trie
        for ch in n:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict) -> str:
        end = "" in node
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if end else body

    return re.compile(build(trie))


class Compact:
    """A big string set as a sorted array of ``hash()`` values (8 bytes an entry)."""

    __slots__ = ("_keys",)

    def __init__(self, entries: Iterable[str]) -> None:
        self._keys = array("q", sorted({hash(e) for e in entries}))

    def __contains__(self, value: str) -> bool:
        h = hash(value)
        i = bisect_left(self._keys, h)
        return i < len(self._keys) and self._keys[i] == h


def segments(nets: list[tuple[int, int, int]]) -> tuple[list[int], list[int]]:
    """Sorted segment starts and, for each, the best (lowest) list id covering it or NO_HIT."""
    nets.sort()
    points = sorted({p for start, end, _ in nets for p in (start, end + 1)})
    heap: list[tuple[int, int]] = []  # (list id, end)
    starts: list[int] = []
    ids: list[int] = []
    j = 0
    for p in points:
        while j < len(nets) and nets[j][0] <= p:
            heappush(heap, (nets[j][2], nets[j][1]))
            j += 1
        while heap and heap[0][1] < p:
            heappop(heap)
        best = heap[0][0] if heap else NO_HIT
        if not ids or ids[-1] != best:
            starts.append(p)
            ids.append(best)
    return starts, ids


def network(entry: str) -> tuple[int, int, int] | None:
    """(family bits, first, last) of a listed address or network (host bits ignored), None if invalid."""
    addr, slash, plen = entry.strip().partition("/")
    parsed = ip_int(addr)
    if parsed is None:
        return None
    bits, start = parsed
    if not slash:
        return bits, start, start
    if not plen.isdigit() or int(plen) > bits:
        return None
    host = (1 << (bits - int(plen))) - 1
    return bits, start & ~host, start | host


def ip_int(value: str) -> tuple[int, int] | None:
    """(family bits, integer) of an address, None if it is not one."""
    try:
        if ":" in value:
            return 128, int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big")
        return (32, int.from_bytes(socket.inet_aton(value), "big")) if value.count(".") == 3 else None
    except (OSError, ValueError):
        return None
