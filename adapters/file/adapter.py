"""The ``file`` adapter: a local text, CSV or JSONL file as a snapshot source.

Every pull reads the whole file and reports it as a full snapshot (the last
batch has ``snapshot_end``), so values removed from the file are retracted for
this source. Reading happens in a worker thread, ``batch_size`` records per
call, at constant memory. Each batch's sub-checkpoint holds the byte offset and
line number after it plus the file's signature (inode, size, mtime): a pull
interrupted after a committed batch resumes right after it if the file is
unchanged, and starts over as a new snapshot (``snapshot_start``) if it
changed, so values the new file lacks are retracted at its end even when the
interrupted pull had committed them.

Producers should replace the file atomically (write a temporary file, then
rename it over the old one); a file rewritten in place while it is read may be
seen half old, half new (the next pull sees a new signature and reads it again).
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import trio

from ctd.adapters.file import formats as formats
from ctd.adapters.file.push import (
    FileListParams,
    ListFile,
    remove_orphans,
    render,
    writable_target,
    write_atomically,
)
from ctd.model import (
    ActionSpec,
    Adapter,
    Batch,
    IndicatorType,
    PullContext,
    PushResult,
    Severity,
    ShareItem,
    SourceUnavailable,
    UpstreamDataError,
)

_SNIFF = 4096
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

_Column = str | int | None


class FileConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``file`` adapter's own ``[plugins.NAME]`` keys."""

    path: str = ""  # required when the plugin pulls
    format: Literal["text", "csv", "jsonl"] = "text"
    type: IndicatorType | None = None  # fixed type for every value; None = auto-detect
    # One transaction per batch: bigger batches write fewer index pages per IoC.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20_000
    severity: Severity = "unknown"  # for records that carry none
    comment_prefix: str = "#"  # "" disables comment lines (text and csv)
    tag_separator: str = ";"  # csv tags cell, or a jsonl "tags" string
    # csv only
    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    skip_initial_space: bool = False
    value_column: str | int = "value"  # header name, or 0-based index
    type_column: _Column = None
    severity_column: _Column = None
    tags_column: _Column = None
    first_seen_column: _Column = None
    last_seen_column: _Column = None
    comments_column: _Column = None
    reference_column: _Column = None

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError at decode time.
        if len(self.delimiter) != 1 or self.delimiter in "\r\n":
            raise ValueError("delimiter must be one character (not a newline)")
        if len(self.quotechar) != 1 or self.quotechar in "\r\n":
            raise ValueError("quotechar must be one character (not a newline)")
        if not self.tag_separator:
            raise ValueError("tag_separator must not be empty")
        if self.comment_prefix != self.comment_prefix.strip():
            raise ValueError("comment_prefix must not contain whitespace at either end")
        for key in formats.CSV_COLUMNS:
            spec = getattr(self, f"{key}_column")
            if isinstance(spec, int) and spec < 0:
                raise ValueError(f"{key}_column must be a 0-based index >= 0")
            if isinstance(spec, str) and not self.header and self.format == "csv":
                raise ValueError(f"{key}_column = {spec!r} names a column but header = false")


class _Reader:
    """The open file and the position after the last record handed out (worker thread only)."""

    def __init__(self, path: str, comment_prefix: str, raw_lines: bool) -> None:
        self.path = path
        self.prefix = comment_prefix.encode()
        self.raw_lines = raw_lines  # csv keeps leading blanks; text/jsonl get stripped lines
        self.f: Any = None
        self.size = 0
        self.sig = ""
        self.offset = 0
        self.line = 0
        self.resumed = False  # positioned at the resume point of an interrupted pull

    def _unavailable(self, exc: OSError) -> SourceUnavailable:
        return SourceUnavailable(f"{self.path}: {exc.strerror or exc}")

    def open(self, resume: dict | None, want_header: bool) -> bytes | None:
        """Open, check, position at the resume point; return the header line if wanted."""
        try:
            self.f = f = open(self.path, "rb")
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise SourceUnavailable(f"{self.path}: not a regular file")
            head = f.read(_SNIFF)
        except OSError as exc:
            self.close()
            raise self._unavailable(exc) from exc
        except BaseException:
            self.close()
            raise
        if head.startswith(_UTF16_BOMS) or b"\0" in head:
            self.close()
            raise SourceUnavailable(f"{self.path}: not a UTF-8 text file")
        self.size = st.st_size
        self.sig = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        self.offset = len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0
        self.line = 0
        header = None
        if want_header:
            self._seek(self.offset)
            lines, _ = self.read(1, peek=False)
            header = lines[0][1] if lines else None
        start = self.offset
        if self._resumable(resume, start):
            assert resume is not None
            self.offset, self.line = resume["offset"], resume["line"]
            self.resumed = True
        self._seek(self.offset)
        return header

    def _resumable(self, cp: dict | None, start: int) -> bool:
        if not isinstance(cp, dict) or cp.get("done") or cp.get("sig") != self.sig:
            return False
        offset, line = cp.get("offset"), cp.get("line")
        return type(offset) is int and type(line) is int and start <= offset <= self.size and line >= self.line

    def _seek(self, offset: int) -> None:
        try:
            self.f.seek(offset)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def read(self, n: int, peek: bool = True) -> tuple[formats.Lines, bool]:
        """Up to ``n`` record lines (numbered) and whether the end of the file was reached.

        With ``peek``, blank and comment lines after the n-th record are consumed
        too, so a batch that ends the file knows it is the last one.
        """
        readline = self.f.readline
        size, prefix, raw_lines = self.size, self.prefix, self.raw_lines
        pos, lineno = self.offset, self.line
        out: formats.Lines = []
        append = out.append
        count = 0
        eof = False
        try:
            while count < n:
                # Stop at the size seen at open: the snapshot matches the signature.
                raw = readline() if pos < size else b""
                if not raw:
                    eof = True
                    break
                lineno += 1
                pos += len(raw)
                s = raw.strip()
                if not s or (prefix and s.startswith(prefix)):
                    continue
                append((lineno, raw.rstrip(b"\r\n") if raw_lines else s))
                count += 1
            while peek and not eof:
                raw = readline() if pos < size else b""
                if not raw:
                    eof = True
                    break
                s = raw.strip()
                if s and not (prefix and s.startswith(prefix)):
                    self.f.seek(pos)  # a record: leave it for the next batch
                    break
                lineno += 1
                pos += len(raw)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        self.offset, self.line = pos, lineno
        return out, eof

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


class FileAdapter(Adapter):
    """Pull indicators from a local file (text: one value a line, csv, jsonl); write list files."""

    Config: ClassVar[type[FileConfig]] = FileConfig
    can_pull: ClassVar[bool] = True
    can_push: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "write": ActionSpec(
            description="write the whole list to a file (text: one value per line, csv or jsonl), atomically",
            mode="full",
            params=FileListParams,
        ),
    }

    def __init__(self, name: str, config: FileConfig, client: Any = None) -> None:
        self.name = name
        self.config = config

    @classmethod
    def check_plugin(cls, pull: bool, config: FileConfig) -> None:
        if pull and not config.path:
            raise ValueError("a pulling file plugin needs `path`")

    @classmethod
    def target(cls, action: str, params: FileListParams) -> str:
        return os.path.abspath(params.path)

    def target_present(self, action: str, params: FileListParams) -> bool:
        """Is the list file there? If not, the next pass rewrites it even if unchanged."""
        return os.path.exists(params.path)

    @classmethod
    def limits(cls, action: str, params: FileListParams) -> tuple[int | None, int | None]:
        return params.max_entries, params.max_bytes

    async def recover(self, action: str, params: FileListParams) -> list[str]:
        """Delete the temporary files a killed write of the list left beside it."""
        try:
            return await trio.to_thread.run_sync(remove_orphans, params.path)
        except OSError as exc:
            raise SourceUnavailable(f"{params.path}: cannot remove leftover temporary files: {exc.strerror}") from exc

    async def replace(self, action: str, params: FileListParams, items: list[ShareItem]) -> PushResult:
        """Write ``items`` as the whole list file (full-replace); values that would break a line come back refused."""
        rejected: dict[str, str] = {}
        try:
            await trio.to_thread.run_sync(write_atomically, params.path, render(items, params.format, rejected))
        except OSError as exc:
            raise SourceUnavailable(f"{params.path}: {exc.strerror or exc}") from exc
        return PushResult(rejected=rejected)

    async def open_list(self, action: str, params: FileListParams) -> ListFile:
        """Write the list file as its chunks come (a temporary file beside it, renamed at commit)."""
        return await ListFile.open(params.path, params.format)

    def _parser(self, header: bytes | None, now: int) -> formats.Parser:
        cfg = self.config
        if cfg.format == "text":
            return formats.text_parser(
                type_=cfg.type,
                severity=cfg.severity,
                comment_prefix=cfg.comment_prefix,
                now=now,
            )
        if cfg.format == "jsonl":
            return formats.jsonl_parser(cfg, now)
        if cfg.header and header is None:
            return lambda lines: ([], [])  # no header means no rows either
        try:
            names = formats.parse_header(header, cfg) if header is not None else None
            return formats.csv_parser(cfg, names, now)
        except ValueError as exc:
            raise UpstreamDataError(f"{cfg.path}: {exc}") from exc

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        """Read the whole file as one snapshot, ``batch_size`` records per batch."""
        cfg = self.config
        reader = _Reader(cfg.path, cfg.comment_prefix, raw_lines=cfg.format == "csv")
        want_header = cfg.format == "csv" and cfg.header
        try:
            header = await trio.to_thread.run_sync(reader.open, ctx.sub_checkpoint, want_header)
            parse = self._parser(header, ctx.now)

            def next_batch() -> Batch:
                lines, eof = reader.read(cfg.batch_size)
                ctx.progress.bytes_read, ctx.progress.bytes_total = reader.offset, reader.size
                sightings, rejected = parse(lines)
                cp: dict[str, Any] = {"offset": reader.offset, "line": reader.line, "sig": reader.sig}
                if eof:
                    cp["done"] = True  # a finished snapshot: the next pull starts over
                return Batch(sightings=sightings, rejected=rejected, sub_checkpoint=cp, snapshot_end=eof)

            first = not reader.resumed  # from the top: a new snapshot, even if the pull had a resume point
            while True:
                batch = await trio.to_thread.run_sync(next_batch)
                if first:
                    batch = msgspec.structs.replace(batch, snapshot_start=True)
                    first = False
                yield batch
                if batch.snapshot_end:
                    return
        finally:
            reader.close()

    async def check(self) -> str | None:
        """Open the file and report its size (raises SourceUnavailable); None for a destination-only plugin."""
        if not self.config.path:
            return None  # pull = false: its sharing targets are checked by check_target
        reader = _Reader(self.config.path, self.config.comment_prefix, raw_lines=False)

        def probe() -> str:
            try:
                reader.open(None, want_header=False)
                return f"readable, {reader.size} bytes ({self.config.format})"
            finally:
                reader.close()

        return await trio.to_thread.run_sync(probe)

    async def check_target(self, action: str, params: FileListParams) -> str:
        """The list file can be written: its directory exists (or can be made) and is writable."""
        try:
            return await trio.to_thread.run_sync(writable_target, params.path)
        except OSError as exc:
            raise SourceUnavailable(str(exc) if not exc.strerror else f"{params.path}: {exc.strerror}") from exc
