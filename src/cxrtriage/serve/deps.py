"""FastAPI dependencies and page rendering shared by the routers (authentication lives in
:mod:`cxrtriage.serve.security`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from cxrtriage import DISCLAIMER
from cxrtriage.serve.service import StudyService

__all__ = ["get_service", "render_page"]


def get_service(request: Request) -> StudyService:
    """The app's :class:`StudyService` (created at start-up)."""
    return request.app.state.service


def render_page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render the Jinja2 template ``name`` with the disclaimer and ``ctx``, as an HTML response with ``status``."""
    t = request.app.state.templates
    return t.TemplateResponse(request, name, {"disclaimer": DISCLAIMER, **ctx}, status_code=status)
