"""The study store: studies in SQLite or PostgreSQL (SQLAlchemy 2, Alembic migrations), images on disk.

Layer 3: imports :mod:`cxrtriage.config`, :mod:`cxrtriage.tasks`,
:mod:`cxrtriage.data` and :mod:`cxrtriage.report` at most, never
:mod:`cxrtriage.serve` (which uses it).
"""

from cxrtriage.store.models import (
    ROLES,
    SOURCES,
    AuditEvent,
    Base,
    ModelResult,
    Notification,
    ReportVersion,
    Study,
    User,
    model_set_key,
)
from cxrtriage.store.outbox import Outbox, OutboxItem, OutgoingObject
from cxrtriage.store.reads import ReportConflictError, worklist_key
from cxrtriage.store.store import (
    DB_NAME,
    DatabaseURLError,
    StoreUnavailableError,
    StudyStore,
    make_engine,
    png_bytes,
    resolve_database_url,
    upgrade_database,
)
from cxrtriage.store.users import UserError

__all__ = [
    "ROLES",
    "SOURCES",
    "ModelResult",
    "AuditEvent",
    "Notification",
    "ReportConflictError",
    "ReportVersion",
    "worklist_key",
    "User",
    "UserError",
    "DB_NAME",
    "Base",
    "DatabaseURLError",
    "Outbox",
    "OutboxItem",
    "OutgoingObject",
    "StoreUnavailableError",
    "Study",
    "StudyStore",
    "make_engine",
    "png_bytes",
    "resolve_database_url",
    "upgrade_database",
    "model_set_key",
]
