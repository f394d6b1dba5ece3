"""Dry run of a rule (``ctdctl rules test``): one chunk of the store per request.

One pass serves the rule and every destination it feeds. The rule is
evaluated once per indicator; each destination only narrows it (its action's
types, its sources, loop prevention), so the chunk is grouped by indicator type
and by a *source mask*: one probe of the indicator's provenance per row says,
for each source any destination names, whether it reported the indicator and
whether that report is live (unretracted). A destination's counts are then the
sum of the few (type, mask) groups it accepts, decided here in Python. The
list is never materialised: SQLite returns a handful of groups.

Chunks are ranges of indicator keys, so a chunk's cost is bounded by the rows
it scans whatever the rule matches; the caller sizes them to hold the store
for a few tens of milliseconds (:meth:`ctd.store.api.Store.rule_test`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ctd.store.ledger import SIZE_SQL, selection_where
from ctd.store.requests import PreviewPart, PreviewSelection, PreviewTarget

# Two bits per source in one 63-bit SQLite integer (bit 2r: a live report from
# source r, bit 2r+1: any report from it); more sources take more mask columns.
_SOURCES_PER_MASK = 31
_KEY_RANGE = "i.id > ? AND i.id <= ?"


def preview(conn: sqlite3.Connection, req: PreviewSelection) -> PreviewPart:
    """Count what ``req.selection`` and each of its targets hold in one chunk, and its newest entries."""
    t0 = time.perf_counter()
    end = req.end
    if end is None:
        end = conn.execute("SELECT coalesce(max(id), 0) FROM indicator").fetchone()[0]
    lo = req.after
    hi = min(end, lo + max(1, req.span))
    where, params = selection_where(req.selection)
    bit = _source_bits(conn, req.targets)
    sizes = sorted({req.size, *(t.size for t in req.targets)})
    for kind in sizes:
        if kind not in SIZE_SQL:
            raise ValueError(f"unknown entry size {kind!r}")
    masks = _mask_columns(sorted(bit.items(), key=lambda kv: kv[1]))
    cols = [f"{SIZE_SQL[k]} AS s{n}" for n, k in enumerate(sizes)] + [f"{m} AS m{n}" for n, m in enumerate(masks)]
    keys = ["type", *(f"m{n}" for n in range(len(masks)))]
    sums = ", ".join(f"sum(s{n})" for n in range(len(sizes)))
    newer, newer_params = _newer_than(req.newer_than)
    skim = req.sample > 0 and req.newer_than is not None
    if skim:
        # Whether the chunk holds anything for the sample, found in the same pass:
        # most chunks then need no second scan.
        cols.append(f"{newer} AS newer")
        sums += ", sum(newer)"
    # LIMIT -1 keeps SQLite from flattening the subquery (it would evaluate the
    # provenance probe once per aggregate); NOT INDEXED keeps it from walking
    # the (type, value) index for the GROUP BY with one table lookup per row.
    groups = conn.execute(
        f"SELECT {', '.join(keys)}, count(*), {sums} FROM ("
        f" SELECT i.type AS type, {', '.join(cols)} FROM indicator i NOT INDEXED"
        f" WHERE {_KEY_RANGE} AND {where} LIMIT -1"
        f") GROUP BY {', '.join(keys)}",
        [*(newer_params if skim else ()), lo, hi, *params],
    ).fetchall()
    selection: dict[str, tuple[int, int]] = {}
    targets: list[dict[str, tuple[int, int]]] = [{} for _ in req.targets]
    nmasks = len(masks)
    for row in groups:
        typ, mask = row[0], _mask(row[1 : 1 + nmasks])
        n, by_size = row[1 + nmasks], dict(zip(sizes, row[2 + nmasks : 2 + nmasks + len(sizes)], strict=True))
        _add(selection, typ, n, by_size[req.size] + n * req.overhead)
        for target, counts in zip(req.targets, targets, strict=True):
            if _accepts(target, typ, mask, bit):
                _add(counts, typ, n, by_size[target.size] + n * target.overhead)
    sample: list[tuple[Any, ...]] = []
    if req.sample > 0 and (not skim or any(row[-1] for row in groups)):
        sample = conn.execute(
            f"SELECT i.last_seen, i.id, i.type, i.value FROM indicator i NOT INDEXED "
            f"WHERE {_KEY_RANGE} AND {where} AND {newer} ORDER BY i.last_seen DESC, i.id DESC LIMIT ?",
            [lo, hi, *params, *newer_params, req.sample],
        ).fetchall()
    return PreviewPart(
        selection=selection,
        targets=tuple(targets),
        sample=tuple(tuple(r) for r in sample),
        after=hi,
        end=end,
        seconds=time.perf_counter() - t0,
    )


# Below any last_seen: SQL orders an unknown last_seen after every known one.
_NO_LAST_SEEN = -(1 << 62)


def _newer_than(entry: tuple[int | None, int] | None) -> tuple[str, list[int]]:
    """A condition (and its params) true of the entries after ``entry`` in ``last_seen DESC, id DESC`` order."""
    if entry is None:
        return "1", []
    last_seen, key = entry
    return (
        f"(coalesce(i.last_seen, {_NO_LAST_SEEN}), i.id) > (?, ?)",
        [_NO_LAST_SEEN if last_seen is None else int(last_seen), int(key)],
    )


def _source_bits(conn: sqlite3.Connection, targets: Sequence[PreviewTarget]) -> dict[str, tuple[int, int]]:
    """Source name -> (its id, its position in the mask), for every source a target names that exists.

    A name with no source row cannot have reported anything, so it needs no bit.
    """
    names = sorted({n for t in targets for n in (*(t.sources or ()), *((t.not_from,) if t.not_from else ()))})
    if not names:
        return {}
    rows = conn.execute(
        f"SELECT name, id FROM source WHERE name IN ({','.join('?' * len(names))}) ORDER BY id", names
    ).fetchall()
    return {name: (sid, r) for r, (name, sid) in enumerate(rows)}


def _mask_columns(sources: list[tuple[str, tuple[int, int]]]) -> list[str]:
    """One correlated sum over the indicator's provenance per 31 sources: each source sets its own two bits.

    An indicator has at most one provenance row per source, so the sum never carries.
    """
    out = []
    for k in range(0, len(sources), _SOURCES_PER_MASK):
        arms = " ".join(
            f"WHEN {int(sid)} THEN {2 << (2 * (r % _SOURCES_PER_MASK))} "
            f"+ (s.retracted = 0) * {1 << (2 * (r % _SOURCES_PER_MASK))}"
            for _, (sid, r) in sources[k : k + _SOURCES_PER_MASK]
        )
        out.append(f"(SELECT coalesce(sum(CASE s.sid {arms} ELSE 0 END), 0) FROM sighting s WHERE s.iid = i.id)")
    return out


def _mask(parts: Sequence[int]) -> int:
    """The mask columns as one integer: source r's bits at 2r and 2r+1."""
    out = 0
    for k, part in enumerate(parts):
        out |= part << (2 * _SOURCES_PER_MASK * k)
    return out


def _accepts(target: PreviewTarget, typ: str, mask: int, bit: dict[str, tuple[int, int]]) -> bool:
    """Does ``target``'s narrowing keep an indicator of type ``typ`` whose provenance is ``mask``?

    The same conditions as ``ledger.selection_where``: of the target's types,
    live from at least one of its sources, never reported by its destination.
    """
    if target.types is not None and typ not in target.types:
        return False
    if target.sources is not None and not any(mask >> (2 * bit[n][1]) & 1 for n in target.sources if n in bit):
        return False
    if target.not_from is not None and target.not_from in bit:
        return not mask >> (2 * bit[target.not_from][1] + 1) & 1
    return True


def _add(counts: dict[str, tuple[int, int]], typ: str, n: int, size: int) -> None:
    had_n, had_size = counts.get(typ, (0, 0))
    counts[typ] = (had_n + n, had_size + size)
