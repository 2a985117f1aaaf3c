"""The FastAPI application: routers, error handlers, upload size guard, start-up."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxrtriage import DISCLAIMER, __version__
from cxrtriage.serve.lan import public_url
from cxrtriage.serve.routers import auth, dicomweb, monitoring, pages, predict, studies, system, worklist
from cxrtriage.serve.security import (
    SESSION_COOKIE,
    AnonymousUploadGuard,
    LoginRequired,
    OriginCheckMiddleware,
    SecurityHeadersMiddleware,
    UploadLinks,
    ensure_initial_user,
    login_redirect,
    send_json_error,
)
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.serve.settings import ServeSettings

__all__ = ["create_app", "openapi_schema"]

log = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse request bodies above ``limit`` bytes with 413.

    Checks ``Content-Length`` first and also counts streamed (chunked) bodies,
    so an oversized upload is never spooled to disk in full.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = 0
                if n > self.limit:
                    return await send_json_error(
                        send, 413, "file_too_large", f"request body {n / 1e6:.1f} MB > limit {self.limit / 1e6:g} MB"
                    )
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await send_json_error(send, 413, "file_too_large", f"request body > limit {self.limit / 1e6:g} MB")


def _err(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason, "status": status}, status_code=status, headers=headers)


def create_app(settings: ServeSettings, service: StudyService | None = None) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    settings : ServeSettings
    service : StudyService, optional
        Injected (tests, benchmarks); otherwise created at start-up, which
        loads the model (exporting ONNX if needed) and opens the database.

    Returns
    -------
    fastapi.FastAPI
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "service", None) is None:
            app.state.service = StudyService(settings)
        ensure_initial_user(app.state.service.store)
        app.state.service.notifier.start()
        yield
        app.state.service.notifier.stop()
        app.state.service.store.close()

    app = FastAPI(
        title="cxrtriage",
        version=__version__,
        description=f"Chest X-ray AI: upload, prediction, heatmap and draft report. **{DISCLAIMER}**",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.public_url = public_url(settings.host, settings.port)
    app.state.upload_links = UploadLinks(settings.signing_key(), settings.upload_link_minutes * 60)
    tdir = resources.files("cxrtriage.serve") / "templates"
    app.state.templates = Jinja2Templates(directory=str(tdir))
    app.mount("/static", StaticFiles(directory=str(resources.files("cxrtriage.serve") / "static")), name="static")
    for r in (
        auth.router,
        pages.router,
        predict.router,
        studies.router,
        dicomweb.router,
        system.router,
        worklist.router,
        monitoring.router,
    ):
        app.include_router(r)
    # innermost first: the signed session cookie (itsdangerous), the body limit, the CSRF Origin check, headers
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.signing_key(),
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.session_hours * 3600),
        same_site="lax",
        https_only=settings.https_only,
    )
    # multipart overhead on top of the file itself
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(AnonymousUploadGuard)
    app.add_middleware(OriginCheckMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _err(exc.status, exc.error, exc.reason, exc.headers)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(login_redirect(exc.next_path), status_code=303)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _err(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, _BodyTooLarge):
            return _err(413, "file_too_large", f"request body > limit {settings.max_upload_mb:g} MB")
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _err(exc.status_code, code, str(exc.detail)[:300], getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _err(
            500, "internal_error", f"unexpected server error ({exc.__class__.__name__}); the request was not stored"
        )

    return app


def openapi_schema() -> dict:
    """The OpenAPI document of the HTTP API, as ``GET /openapi.json`` serves it.

    Built from an app that is never started: no model is loaded, nothing is written.

    Returns
    -------
    dict
        OpenAPI 3.1 document (``paths``, ``components``, ...), JSON-serialisable.
    """
    from pathlib import Path

    unused = Path("unused")  # neither folder is opened: the app is not started
    return create_app(ServeSettings(model_dir=unused, data_dir=unused, secret_key="unused" * 6)).openapi()
