"""``ctdctl sync SOURCE``'s progress while the pull runs: a live bar on a terminal, plain lines otherwise.

The sync request waits on its own connection; between waits ctdctl polls the
source's progress (``sources`` without counts, which reads no table) over a
second one. On a terminal the bar is redrawn in place every second; elsewhere
one plain line is written every ten seconds. Nothing is shown with ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TextIO

from ctd.ctdctl.escape import escape
from ctd.ctdctl.render import duration, human_bytes, progress_cell
from ctd.errors import CtdError

TTY_INTERVAL: Final = 1.0
PLAIN_INTERVAL: Final = 10.0
BAR_WIDTH: Final = 24


def bar(source: str, p: dict[str, Any]) -> str:
    """``osint [#########---------------]  40%  2 records  1.2 MiB  ETA 22s`` (no total: no bar)."""
    pct = p.get("percent")
    parts = [escape(source)]
    if pct is not None:
        filled = round(BAR_WIDTH * float(pct) / 100)
        parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
        parts.append(f"{float(pct):3.0f}%")
    parts.append(f"{p.get('records', 0)} records")
    if p.get("bytes_read"):
        parts.append(human_bytes(p["bytes_read"]))
    parts.append(f"{float(p.get('records_per_s') or 0):.0f}/s")
    if p.get("eta_s") is not None:
        parts.append(f"ETA {duration(float(p['eta_s']))}")
    return "  ".join(parts)


class SyncProgress:
    """The ``tick`` of ``ControlClient.call_ticking``: fetch the source's progress and show it."""

    def __init__(self, source: str, fetch: Callable[[], list[dict[str, Any]]], err: TextIO, tty: bool) -> None:
        self.source = source
        self.fetch = fetch
        self.err = err
        self.tty = tty
        self.interval = TTY_INTERVAL if tty else PLAIN_INTERVAL
        self._drawn = False

    def tick(self) -> None:
        try:
            sources = self.fetch()
        except CtdError:
            return  # progress is a courtesy: the sync's own answer decides the outcome
        p = next((s.get("progress") for s in sources if s.get("name") == self.source), None)
        if not p:
            return
        if self.tty:
            self.err.write("\r\x1b[K" + bar(self.source, p))
            self._drawn = True
        else:
            self.err.write(f"ctdctl: sync {escape(self.source)}: {progress_cell(p)}\n")
        self.err.flush()

    def done(self) -> None:
        """Clear the bar before the result is printed."""
        if self._drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()
