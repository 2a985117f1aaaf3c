"""Login, logout and the QR code's upload links (pages; see :mod:`cxrtriage.serve.security`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cxrtriage.serve.deps import get_service, render_page
from cxrtriage.serve.security import (
    Principal,
    audit,
    check_login_allowed,
    login_key,
    login_throttle,
    optional_principal,
    safe_next,
)
from cxrtriage.serve.service import ApiError

router = APIRouter(tags=["auth"], include_in_schema=False)


def _next(value: str) -> str:
    """``safe_next`` of a given path; empty stays empty (then the landing page goes by role, :func:`landing_page`)."""
    return safe_next(value) if value else ""


def landing_page(role: str) -> str:
    """Where a login without a ``next`` page goes: the worklist for radiologists, the upload page otherwise."""
    return "/worklist" if role == "radiologist" else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = Query("", max_length=300)) -> HTMLResponse:
    return render_page(
        request, "login.html", next=_next(next), message=None, no_users=get_service(request).store.user_count() == 0
    )


@router.post("/login")
def login(
    request: Request,
    username: str = Form("", max_length=200),
    password: str = Form("", max_length=1024),
    next: str = Form("", max_length=300),
) -> Response:
    """Check the password (Argon2); on success start a new signed session and go to ``next``."""
    store = get_service(request).store
    try:
        check_login_allowed(request, username)
    except ApiError as exc:
        audit(request, None, "login_throttled", detail=f"user {username[:64]!r}")
        return render_page(request, "login.html", 429, next=_next(next), message=exc.reason, no_users=False)
    user = store.authenticate(username, password) if username and password else None
    if user is None:
        login_throttle(request).add(login_key(request, username))
        audit(request, None, "login_failed", detail=f"user {username[:64]!r}")
        return render_page(
            request, "login.html", 401, next=_next(next), message="Wrong user name or password.", no_users=False
        )
    login_throttle(request).reset(login_key(request, username))
    request.session.clear()  # a fresh session: no fixation of an earlier one
    request.session.update({"u": user.username, "s": "full"})
    audit(request, Principal(user.username, user.role), "login")
    return RedirectResponse(safe_next(next) if next else landing_page(user.role), status_code=303)


@router.post("/logout")
def logout(request: Request, principal: Principal | None = Depends(optional_principal)) -> Response:
    request.session.clear()
    if principal is not None:
        audit(request, principal, "logout")
    return RedirectResponse("/login", status_code=303)


@router.get("/u/{token}")
def upload_link(request: Request, token: str, principal: Principal | None = Depends(optional_principal)) -> Response:
    """The QR code's link: open an upload-only session for the user who showed the QR code, then the upload page."""
    if principal is not None and principal.scope == "full":
        return RedirectResponse("/", status_code=303)
    try:
        username = request.app.state.upload_links.verify(token)
        user = get_service(request).store.get_user(username)
        if user is None:
            raise ApiError(403, "upload_link_invalid", "upload link of a user that no longer exists")
    except ApiError as exc:
        audit(request, None, "upload_link_refused", detail=exc.error)
        return render_page(request, "error.html", exc.status, error=exc)
    request.session.clear()
    request.session.update({"u": user.username, "s": "upload", "mine": []})
    audit(request, Principal(user.username, user.role, "upload"), "upload_link")
    return RedirectResponse("/", status_code=303)
