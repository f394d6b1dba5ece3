"""The ``file`` adapter's push side: write a list file atomically.

Firewalls and proxies read such files as external dynamic lists, so a reader
must never see a half-written list: write a temporary file in the same
directory, fsync it, rename it over the old one, fsync the directory.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec

from ctd.adapters.base import ShareItem
from ctd.model import iso

_enc = msgspec.json.Encoder()


class FileListParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``write`` action."""

    path: str
    format: Literal["text", "csv", "jsonl"] = "text"
    max_entries: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


CSV_HEADER = ["type", "value", "severity", "reputation", "first_seen", "last_seen", "expires_at", "tags", "sources"]


def render(items: Iterable[ShareItem], fmt: str) -> Iterable[bytes]:
    """The list file's content, in chunks."""
    if fmt == "text":
        for it in items:
            yield it.value.encode() + b"\n"
    elif fmt == "jsonl":
        for it in items:
            d = msgspec.structs.asdict(it)
            for k in ("first_seen", "last_seen", "expires_at"):
                d[k] = iso(d[k])
            yield _enc.encode(d) + b"\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for it in items:
            w.writerow([it.type, it.value, it.severity, it.reputation, iso(it.first_seen) or "",
                        iso(it.last_seen) or "", iso(it.expires_at) or "", ";".join(it.tags), ";".join(it.sources)])
            if buf.tell() > 65536:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode()


def write_atomically(path: str, chunks: Iterable[bytes]) -> int:
    """Replace ``path`` with ``chunks`` so readers see the old or the new file, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ctd-", dir=directory)
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
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return size
