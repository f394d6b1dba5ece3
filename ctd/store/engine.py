"""The SQLite backend: one request of the store API, performed on one connection.

``execute`` is synchronous; the store actor runs it in its worker thread, one
request at a time (``CapacityLimiter(1)``), so each request that writes is one
transaction on a connection nobody else touches.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ctd.store import backup, changes, fulllist, guard, ledger, manual, preview, query, reapply, rejections, sql
from ctd.store.requests import (
    ApplyGuard,
    BackupDatabase,
    ChangeMarks,
    CheckDatabase,
    CompletePull,
    CountBySource,
    CountIndicators,
    CountLedger,
    Expire,
    ExportPage,
    FetchPending,
    FindInList,
    FinishPass,
    GetCheckpoint,
    GetListHash,
    GetMutes,
    GetRejections,
    GetSizes,
    IngestBatch,
    ListChunk,
    ListLedger,
    PlanSharing,
    PreviewSelection,
    ReapplyAllowlist,
    ReapplyPluginValues,
    RecordApplied,
    RecordDelivery,
    RecordFull,
    RecordPullError,
    Resync,
    Retract,
    SearchIndicators,
    SetCheckpoint,
    SetMute,
    ShowIndicators,
    Unretract,
)

ENGINE_VERSIONS = {"sqlite": sqlite3.sqlite_version}

connect = sql.connect


def execute(conn: sqlite3.Connection, request: Any) -> Any:
    """Perform ``request`` on ``conn`` and return its result; an unknown request is a bug and fails loudly."""
    match request:
        # The hot path first.
        case IngestBatch():
            return sql.ingest(conn, request)
        case FetchPending(sharing=name, retraction=retraction, limit=limit):
            return ledger.fetch_pending(conn, name, retraction, limit)
        case RecordDelivery():
            return ledger.record(
                conn,
                request.sharing,
                done=list(request.done),
                rejected=request.rejected,
                retraction=request.retraction,
                now=request.now,
                ids=request.ids,
                expires=request.expires,
                staged=request.staged,
            )
        case RecordApplied(sharing=name, now=now):
            return ledger.record_applied(conn, name, now=now)
        case ListChunk(sharing=name, after=after, limit=limit):
            return fulllist.chunk(conn, name, after, limit)
        case ChangeMarks(sources=sources):
            return changes.marks(conn, sources)
        # Sources and checkpoints.
        case GetCheckpoint(source=name):
            return sql.get_checkpoint(conn, name)
        case SetCheckpoint(source=name, last_run=last_run):
            return sql.set_checkpoint(conn, name, last_run)
        case CompletePull(source=name, cycle_start=start, now=now):
            return sql.complete_pull(conn, name, start, now)
        case ReapplyPluginValues():
            return reapply.reapply_plugin_values(conn, request)
        case RecordPullError(source=name, error=error):
            return sql.record_error(conn, name, error)
        case GetRejections(source=name):
            return rejections.listing(conn, name)
        # Housekeeping and operator actions.
        case Expire(now=now, after=after):
            return sql.expire_step(conn, now, after)
        case ReapplyAllowlist(allowlisted=allowlisted, now=now):
            return sql.reapply_allowlist(conn, allowlisted or _nothing, now)
        case ApplyGuard():
            return guard.apply_guard(
                conn, request.source, request.signature, request.warninglisted, request.tag, request.now
            )
        case Retract(candidates=candidates, source=source, now=now, until=until):
            ids = query.find_ids(conn, list(candidates))
            return manual.retract(conn, ids, source, now, until) if ids else None
        case Unretract(candidates=candidates, source=source):
            ids = query.find_ids(conn, list(candidates))
            return manual.unretract(conn, ids, source) if ids else None
        case SetMute(rule=rule, until=until):
            return sql.set_mute(conn, rule, until)
        case GetMutes():
            return sql.get_mutes(conn)
        # Reads for ctdctl.
        case CountIndicators():
            return query.counts(conn)
        case CountBySource():
            return query.source_counts(conn)
        case ShowIndicators(candidates=candidates, raw=raw):
            return query.show(conn, list(candidates), raw)
        case SearchIndicators():
            return query.search(
                conn, type_=request.type, source=request.source, active=request.active, limit=request.limit
            )
        case ExportPage():
            return query.export_page(
                conn,
                after=request.after,
                limit=request.limit,
                type_=request.type,
                source=request.source,
                active=request.active,
            )
        case GetSizes():
            return sql.db_size(conn)
        case BackupDatabase() | CheckDatabase():
            return execute_beside(sql.db_file(conn), request)
        # Sharing and the delivery ledger.
        case PlanSharing():
            return ledger.plan(conn, request)
        case GetListHash(sharing=name):
            return fulllist.list_hash(conn, name)
        case FindInList(sharing=name, values=values):
            return fulllist.find(conn, name, values)
        case RecordFull():
            return ledger.record_full(
                conn,
                request.sharing,
                list_hash=request.list_hash,
                rejected=request.rejected,
                now=request.now,
                unchanged=request.unchanged,
            )
        case FinishPass(sharing=name, now=now, error=error):
            return ledger.finish(conn, name, now=now, error=error)
        case Resync(sharing=name, since=since):
            return ledger.resync(conn, name, since=since)
        case CountLedger(sharing=name):
            return ledger.ledger_counts(conn, name)
        case ListLedger(sharing=name, states=states, limit=limit):
            return ledger.ledger_rows(conn, name, states, limit)
        case PreviewSelection():
            return preview.preview(conn, request)
        case _:
            raise AssertionError(f"the store got a request it does not know: {request!r}")


def execute_beside(path: str, request: Any) -> Any:
    """The requests served on a read connection of their own, beside the writer (``ctd.store.backup``)."""
    match request:
        case BackupDatabase(target=target, keep=keep):
            return backup.online_backup(path, target, keep)
        case CheckDatabase():
            return backup.integrity_check(path)
        case _:
            raise AssertionError(f"not a request served beside the writer: {request!r}")


BESIDE = (BackupDatabase, CheckDatabase)


def _nothing(type_: str, value: str) -> bool:
    return False
