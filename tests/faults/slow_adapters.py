"""File adapters that pause at a chosen point, so a fault test can SIGKILL the real daemon exactly there.

Loaded by the daemon subprocess as ``adapter = "tests.faults.slow_adapters:NAME"``. Each waits while
its ``pause_file`` exists (the test creates it before and deletes it to let the daemon go on).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import ClassVar

import trio

from ctd.adapters.file.adapter import FileAdapter, FileConfig
from ctd.adapters.file.push import FileListParams, ListFile, render, write_atomically
from ctd.model import Batch, PullContext, PushResult, ShareItem


class PausingConfig(FileConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pause_file: str = ""  # while this file exists, the adapter waits at its pause point
    pause_after: int = 1  # pull: batches before the pause; write: lines before the pause


class PausingSource(FileAdapter):
    """The file source, pausing after ``pause_after`` committed batches while ``pause_file`` exists."""

    Config: ClassVar[type[PausingConfig]] = PausingConfig  # type: ignore[assignment]

    async def pull(self, ctx: PullContext) -> AsyncIterator[Batch]:
        n = 0
        pause = trio.Path(self.config.pause_file)
        async for batch in super().pull(ctx):
            yield batch  # returns when the actor asks for the next (one batch may wait to be committed)
            n += 1
            # The signal comes from another process (the test): polled, no trio.Event can carry it.
            while n >= self.config.pause_after and await pause.exists():  # noqa: ASYNC110
                await trio.sleep(0.02)


class PausingList(FileAdapter):
    """The file list destination, its write pausing after ``pause_after`` lines while ``pause_file`` exists."""

    Config: ClassVar[type[PausingConfig]] = PausingConfig  # type: ignore[assignment]

    async def replace(self, action: str, params: FileListParams, items: list[ShareItem]) -> PushResult:
        rejected: dict[str, str] = {}
        chunks = _pausing(render(items, params.format, rejected), self.config, [0])
        await trio.to_thread.run_sync(write_atomically, params.path, chunks)
        return PushResult(rejected=rejected)

    async def open_list(self, action: str, params: FileListParams) -> ListFile:
        writer: _PausingFile = await _PausingFile.open(params.path, params.format)
        writer.config = self.config
        return writer


class _PausingFile(ListFile):
    """A streamed list file whose lines pause once ``pause_after`` were written (in the write's thread)."""

    config: PausingConfig
    written = 0

    def chunks(self, items: list[ShareItem], rejected: dict[str, str]) -> Iterable[bytes]:
        counter = [self.written]
        for chunk in _pausing(super().chunks(items, rejected), self.config, counter):
            self.written = counter[0]
            yield chunk


def _pausing(chunks: Iterable[bytes], config: PausingConfig, counter: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        if counter[0] == config.pause_after:
            while os.path.exists(config.pause_file):  # in the write's worker thread
                time.sleep(0.02)
        counter[0] += 1
        yield chunk
