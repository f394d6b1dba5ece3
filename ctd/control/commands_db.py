"""Control commands about the database file: online backups and integrity checks (``ctdctl db``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import structlog

from ctd.errors import BadRequest, ControlError, StoreError

if TYPE_CHECKING:
    from ctd.control.view import DaemonView

log = structlog.get_logger("ctd.control")

MAX_KEEP = 10000


class DbCommands:
    d: DaemonView

    async def db_backup(self, args: dict[str, Any]) -> dict[str, Any]:
        """An online copy of the database (the store keeps committing meanwhile), written by the daemon.

        ``path``: an absolute path (ctdctl makes the user's relative path absolute), or none for a new
        file in ``state_dir/backups``; never overwritten. ``keep``: then remove all but the newest N there.
        """
        path, keep = args.get("path"), args.get("keep")
        if path is not None and (not isinstance(path, str) or not os.path.isabs(path) or "\0" in path):
            raise BadRequest("path must be an absolute path")
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= MAX_KEEP):
            raise BadRequest(f"keep must be between 1 and {MAX_KEEP}")
        try:
            result = await self.d.store.backup(path, keep=keep)
        except StoreError as exc:
            log.error("database backup failed", ctd_event="database_backup_failed", path=path, error=str(exc))
            raise ControlError(f"backup failed: {exc}") from None
        log.info(
            "database backed up",
            ctd_event="database_backup",
            path=result["path"],
            bytes=result["bytes"],
            seconds=result["seconds"],
            removed=result["removed"],
        )
        return result

    async def db_check(self, args: dict[str, Any]) -> dict[str, Any]:
        """SQLite's integrity_check and the counters against a recount, on a read snapshot beside the store."""
        try:
            result = await self.d.store.check()
        except StoreError as exc:
            raise ControlError(f"check failed: {exc}") from None
        if result["ok"]:
            log.info("database checked: ok", ctd_event="database_checked", seconds=result["seconds"])
        else:
            log.error(
                "database check found problems: restore a backup (docs/operations.md, Restore)",
                ctd_event="database_check_failed",
                problems=result["problems"][:10],
            )
        return result
