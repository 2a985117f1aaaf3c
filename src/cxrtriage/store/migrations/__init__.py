"""Alembic migrations of the study store (run by :meth:`cxrtriage.store.StudyStore.migrate`)."""
