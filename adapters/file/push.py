"""The ``file`` adapter's push side: write a list file atomically.

Firewalls and proxies read such files as external dynamic lists, so a reader
must never see a half-written list: write a temporary file in the same
directory, fsync it, rename it over the old one, fsync the directory. The
temporary file is named after its target (``.ctd-<name>.<random>.tmp``), so a
write killed half-way leaves an orphan that ``remove_orphans`` can tell from
another target's write in progress; the adapters call it when a sharing starts.

A reader also takes each line for one indicator. Values pass the validity gate
at canonicalisation, and the renderer applies it again to everything it writes
(a value stored by an older version or a third-party adapter): a value with a
line break, control or separator character is never written, in any format,
and is reported back as refused. Free-text fields (tags, comments) cannot break
a row either: jsonl escapes them, csv shows their unprintable characters as
``\\uXXXX``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Self

import msgspec
import trio

from ctd.model import ListWriter, PushResult, ShareItem, SourceUnavailable, iso, value_problem

_enc = msgspec.json.Encoder()
REFUSED = "refused for a line-oriented list: "


class FileListParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``write`` action."""

    path: str
    format: Literal["text", "csv", "jsonl"] = "text"
    max_entries: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


CSV_HEADER = ["type", "value", "severity", "reputation", "first_seen", "last_seen", "expires_at", "tags", "sources"]


def admitted(items: Iterable[ShareItem], rejected: dict[str, str]) -> Iterator[ShareItem]:
    """The items whose value passes the gate; the others go into ``rejected`` (value -> reason)."""
    check = value_problem
    for it in items:
        problem = check(it.value, it.type)
        if problem is None:
            yield it
        else:
            rejected[it.value] = REFUSED + problem


def render(
    items: Iterable[ShareItem], fmt: str, rejected: dict[str, str] | None = None, *, header: bool = True
) -> Iterator[bytes]:
    """The list file's content, in chunks: one line per written indicator (after the csv header).

    Refused values are left out whatever ``rejected`` is; the dict, if given,
    receives them with their reasons (filled as the chunks are consumed).
    ``header=False``: a later part of a list (no csv header).
    """
    items = admitted(items, {} if rejected is None else rejected)
    if fmt == "text":
        for it in items:
            yield it.value.encode() + b"\n"
    elif fmt == "jsonl":
        for it in items:
            d = msgspec.structs.asdict(it)
            for k in ("first_seen", "last_seen", "expires_at"):
                d[k] = iso(d[k])
            yield _json_line(d)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if header:
            w.writerow(CSV_HEADER)
        for it in items:
            w.writerow(
                [
                    it.type,
                    it.value,
                    it.severity,
                    it.reputation,
                    iso(it.first_seen) or "",
                    iso(it.last_seen) or "",
                    iso(it.expires_at) or "",
                    _visible(";".join(it.tags)),
                    _visible(";".join(it.sources)),
                ]
            )
            if buf.tell() > 65536:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode()


def _json_line(d: dict) -> bytes:
    """One JSON line; text fields with separators (U+2028, NEL...) or lone surrogates are \\u-escaped."""
    try:
        line = _enc.encode(d)
        # msgspec escapes C0 controls only; the rare line with anything else unprintable
        # (DEL, C1, separators...) is re-encoded all-ASCII: the same JSON value.
        if (line.isascii() and b"\x7f" not in line) or line.decode().isprintable():
            return line + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in a tag or comment
        pass
    return json.dumps(d, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def _visible(text: str) -> str:
    """``text`` with each unprintable character written as a ``\\uXXXX`` escape (csv has no escapes)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text
    )


# What ctd < issue 11 named its temporary files (tempfile.mkstemp(prefix=".ctd-")): no target in
# the name, so one left by a killed write is an orphan whatever list it was for.
_LEGACY_TMP = re.compile(r"\.ctd-[a-z0-9_]{8}")


def _tmp_prefix(path: str) -> str:
    return f".ctd-{os.path.basename(path)[:100]}."


def remove_orphans(path: str) -> list[str]:
    """Delete the temporary files a killed write of ``path`` left beside it; returns their paths.

    Only ``path``'s own (``.ctd-<name>.*.tmp``) and the older unnamed ones: another target's
    write in progress in the same directory is never touched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _tmp_prefix(path)
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if (name.startswith(prefix) and name.endswith(".tmp")) or _LEGACY_TMP.fullmatch(name):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            removed.append(os.path.join(directory, name))
    return removed


def write_atomically(path: str, chunks: Iterable[bytes]) -> int:
    """Replace ``path`` with ``chunks`` so readers see the old or the new file, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=directory)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(directory)
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class ListFile(ListWriter):
    """A list file written as its chunks come: what ``write_atomically`` does, in steps.

    ``open`` creates the temporary file beside ``path`` (named for ``remove_orphans``); each
    ``write`` renders a chunk and appends it there (in a worker thread: rendering and writing
    never block the event loop); ``commit`` fsyncs it and renames it over ``path``; ``discard``
    removes it. Memory holds one chunk at a time, whatever the length of the list.
    """

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.directory = os.path.dirname(os.path.abspath(path))
        self.tmp: str | None = None
        self._f: Any = None
        self._first = True  # the csv header comes with the first chunk
        self.size = 0

    @classmethod
    async def open(cls, path: str, fmt: str) -> Self:
        self = cls(path, fmt)
        try:
            await trio.to_thread.run_sync(self._open)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        return self

    def _open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=_tmp_prefix(self.path), suffix=".tmp", dir=self.directory)
        self._f = os.fdopen(fd, "wb")

    def chunks(self, items: list[ShareItem], rejected: dict[str, str]) -> Iterable[bytes]:
        """The bytes of one part of the list (a subclass may watch them go by)."""
        first, self._first = self._first, False
        return render(items, self.fmt, rejected, header=first)

    def _write(self, items: list[ShareItem]) -> dict[str, str]:
        rejected: dict[str, str] = {}
        for data in self.chunks(items, rejected):
            self._f.write(data)
            self.size += len(data)
        return rejected

    async def write(self, items: list[ShareItem]) -> dict[str, str]:
        try:
            return await trio.to_thread.run_sync(self._write, items)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OSError) -> SourceUnavailable:
        return SourceUnavailable(f"{self.path}: {exc.strerror or exc}")

    def _commit(self) -> None:
        if self._first:
            self._write([])  # an empty list: still a whole file (a csv header)
        assert self.tmp is not None, "commit of a list that was not opened"
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise
        self.tmp = None
        _fsync_dir(self.directory)

    async def commit(self) -> PushResult:
        try:
            await trio.to_thread.run_sync(self._commit)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        return PushResult()

    def _discard(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.tmp is not None:
            _unlink(self.tmp)
            self.tmp = None

    async def discard(self) -> None:
        await trio.to_thread.run_sync(self._discard)


def writable_target(path: str) -> str:
    """Can ``write_atomically`` replace ``path``? What was found, or OSError saying what is wrong.

    The file is written as a temporary file in its directory, then renamed: so
    the directory (or the nearest existing parent, which ``makedirs`` would
    create it in) must be writable; an existing ``path`` must be a regular file.
    """
    full = os.path.abspath(path)
    if os.path.lexists(full) and not os.path.isfile(full):
        raise OSError(f"{path} exists and is not a regular file")
    directory = os.path.dirname(full)
    existing = directory
    while not os.path.isdir(existing):
        parent = os.path.dirname(existing)
        if parent == existing or os.path.lexists(existing):
            raise OSError(f"cannot create directory {directory}: {existing} is not a directory")
        existing = parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"directory {existing} is not writable by this process")
    if existing != directory:
        return f"{path}: directory {directory} will be created in {existing} (writable)"
    state = "exists" if os.path.exists(full) else "will be created"
    return f"{path}: {state}, directory {directory} writable"
