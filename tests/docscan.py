"""Reading the docs the way tests/test_docs.py checks them: fenced blocks, shell
command lines, Markdown links and GitHub heading anchors. Pure functions on text.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def doc_files() -> list[Path]:
    """README.md, SECURITY.md and every page under docs/."""
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its info string, its (dedented) text."""

    path: Path
    line: int
    info: str
    text: str

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def options(self) -> list[str]:
        return self.info.split()[1:]

    def where(self, offset: int = 0) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line + offset}"


_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (CommonMark fences, possibly indented in a list)."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        out.append(Block(path, i + 1, m["info"].strip(), "\n".join(body) + "\n"))
        i = j + 1
    return out


def prose(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file outside fenced blocks, numbered from 1."""
    inside: set[int] = set()
    for b in blocks(path):
        inside.update(range(b.line, b.line + b.text.count("\n") + 2))
    return [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if n not in inside]


# --- shell command lines ----------------------------------------------------------

_SEPARATORS = {"&&", "||", ";", "|", "&"}
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUDO_OPTIONS_WITH_VALUE = {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"}


def command_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line offset, command text) of a ``sh`` block (every line) or ``console`` block (prompted lines)."""
    pending, start = "", 0
    for n, raw in enumerate(block.text.splitlines()):
        line = raw
        if not pending:
            start = n
            if block.lang == "console":
                if not line.startswith(("$ ", "# ")):
                    continue  # output
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def _segments(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, each cut at its first redirection."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    seg: list[str] = []
    redirected = False
    for tok in lexer:
        if tok in _SEPARATORS:
            yield seg
            seg, redirected = [], False
        elif redirected:
            continue
        elif set(tok) <= set("<>()"):
            redirected = True  # `> file`, `< file`: the rest is not an argument
            if seg and seg[-1].isdigit():
                seg.pop()  # the "2" of 2>
        else:
            seg.append(tok)
    yield seg


def _strip_prefixes(seg: list[str]) -> list[str]:
    """Drop ``sudo [options]``, ``env`` and ``VAR=value`` before the program."""
    i = 0
    while i < len(seg):
        if _ENV_ASSIGNMENT.match(seg[i]) or seg[i] == "env":
            i += 1
        elif seg[i] == "sudo":
            i += 1
            while i < len(seg) and seg[i].startswith("-"):
                i += 2 if seg[i] in _SUDO_OPTIONS_WITH_VALUE else 1
        else:
            break
    return seg[i:]


def ctd_invocations(text: str) -> Iterator[tuple[str, list[str]]]:
    """(``ctd`` or ``ctdctl``, its arguments) for each invocation in a shell line."""
    for seg in _segments(text):
        seg = _strip_prefixes(seg)
        if not seg:
            continue
        prog = os.path.basename(seg[0])
        if prog in ("ctd", "ctdctl"):
            yield prog, seg[1:]
        elif prog.startswith("python") and seg[1:2] == ["-m"] and len(seg) > 2:
            module = {"ctd": "ctd", "ctd.ctdctl": "ctdctl"}.get(seg[2])
            if module:
                yield module, seg[3:]


# --- links and anchors -------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+).+?\1")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of each inline Markdown link outside code."""
    for n, line in prose(path):
        for m in _LINK.finditer(_CODE_SPAN.sub(lambda c: "", line)):
            yield n, m["target"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a page (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose(path):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m["text"])
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out
