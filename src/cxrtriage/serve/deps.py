"""FastAPI dependencies: the service object (authentication lives in :mod:`cxrtriage.serve.security`)."""

from __future__ import annotations

from fastapi import Request

from cxrtriage.serve.service import StudyService

__all__ = ["get_service"]


def get_service(request: Request) -> StudyService:
    """The app's :class:`StudyService` (created at start-up)."""
    return request.app.state.service
