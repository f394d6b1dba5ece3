"""The store: one deduplicated store of IoCs with provenance, and the delivery ledger.

The public face is what callers may use: the :class:`Store` API (named async
methods, one request each), the SQLite store actor that implements it
(:func:`run_store` hands out a :class:`StoreClient`), the stage row and its
builder, and the request/result types. Everything else in this package
(``sql``, ``query``, ``ledger``, ``schema``, ``engine``) is the SQLite backend
and is imported by nothing outside ``ctd/store/``.
"""

from ctd.store.actor import StoreClient as StoreClient
from ctd.store.actor import run_store as run_store
from ctd.store.api import Store as Store
from ctd.store.api import StoreStatistics as StoreStatistics
from ctd.store.backup import BACKUP_DIR as BACKUP_DIR
from ctd.store.preflight import check_database_file as check_database_file
from ctd.store.requests import KEEP_REJECTED as KEEP_REJECTED
from ctd.store.requests import Checkpoint as Checkpoint
from ctd.store.requests import IngestBatch as IngestBatch
from ctd.store.requests import IngestResult as IngestResult
from ctd.store.requests import Plan as Plan
from ctd.store.requests import PlanSharing as PlanSharing
from ctd.store.requests import PreviewTarget as PreviewTarget
from ctd.store.requests import RejectedRow as RejectedRow
from ctd.store.requests import Selection as Selection
from ctd.store.rows import STAGE_COLUMNS as STAGE_COLUMNS
from ctd.store.rows import StageRow as StageRow
from ctd.store.rows import to_stage_rows as to_stage_rows
from ctd.store.sql import CACHE_KIB as CACHE_KIB

__all__ = [
    "BACKUP_DIR",
    "CACHE_KIB",
    "Checkpoint",
    "IngestBatch",
    "IngestResult",
    "KEEP_REJECTED",
    "Plan",
    "PlanSharing",
    "PreviewTarget",
    "RejectedRow",
    "STAGE_COLUMNS",
    "Selection",
    "StageRow",
    "Store",
    "StoreClient",
    "check_database_file",
    "StoreStatistics",
    "run_store",
    "to_stage_rows",
]
