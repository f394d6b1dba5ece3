"""The web/news corpus (tests/corpus_web): items, their text as the adapters will see it, expected sets."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import feedparser

from ctd.adapters.web.html import html_main_text, html_text

ROOT = Path(__file__).parent / "corpus_web"
EXPECTED_FILES = ("expected.txt", "expected_warninglisted.txt", "expected_residual.txt")


@dataclass(frozen=True)
class Item:
    name: str
    file: str
    kind: str  # html | text | feed
    site: str
    imitates: str

    @property
    def path(self) -> Path:
        return ROOT / self.file

    def expected(self, which: str) -> set[tuple[str, str]]:
        """One of EXPECTED_FILES as a set of (type, value); a missing file is empty."""
        p = ROOT / self.name / which
        if not p.exists():
            return set()
        return {tuple(line.split(" ", 1)) for line in p.read_text().splitlines() if line}  # type: ignore[misc]

    @property
    def extractable(self) -> set[tuple[str, str]]:
        """Everything a perfect extractor returns: wanted, warning-listed and residual benign values."""
        return set().union(*(self.expected(f) for f in EXPECTED_FILES))

    @property
    def exclude(self) -> list[str]:
        return [self.site] if self.site else []


def items() -> list[Item]:
    return [Item(**it) for it in tomllib.loads((ROOT / "corpus.toml").read_text())["item"]]


def feed_entry_texts(raw: bytes) -> list[str]:
    """Per entry: title, summary and content, HTML fragments turned into text (as the rss adapter does)."""
    out = []
    for entry in feedparser.parse(raw).entries:
        parts = []
        details = [entry.get("title_detail"), entry.get("summary_detail"), *entry.get("content", [])]
        for detail in details:
            if detail:
                value = detail.get("value", "")
                parts.append(html_text(value) if "html" in (detail.get("type") or "") else value)
        out.append("\n\n".join(parts))
    return out


def text_of(item: Item) -> str:
    raw = item.path.read_bytes()
    if item.kind == "html":
        return html_main_text(raw)
    if item.kind == "text":
        return raw.decode("utf-8")
    return "\n\n".join(feed_entry_texts(raw))
