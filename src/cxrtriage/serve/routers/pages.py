"""HTML pages: the upload page (with the QR code of a short-lived upload link) and one result page per study.

Every page needs a login (:func:`cxrtriage.serve.security.page_principal`
redirects to ``/login``); phones that scanned the QR code have an upload-only
session and see only their own uploads.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from cxrtriage.serve.deps import get_service, render_page
from cxrtriage.serve.lan import qr_svg
from cxrtriage.serve.routers.predict import read_upload
from cxrtriage.serve.schemas import MAX_NAME_CHARS, MAX_SECTION_CHARS, SignOffIn
from cxrtriage.serve.security import (
    Principal,
    audit,
    check_upload_quota,
    page_principal,
    readable_study,
    remember_upload,
    signer_name,
)
from cxrtriage.serve.service import ApiError, StudyService, study_out

router = APIRouter(tags=["pages"], include_in_schema=False)


_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def _base_for_phones(request: Request) -> str:
    """The address a phone should use: the one this page was opened with, unless that is loopback.

    Behind a reverse proxy the page's own address (``Host`` and, with uvicorn's
    proxy headers, the scheme) is the proxy's name; on the server machine itself
    (``127.0.0.1``) the LAN address found at start-up is used instead.
    """
    host = request.url.hostname or ""
    if not host or host.startswith(_LOOPBACK):
        return request.app.state.public_url
    return str(request.base_url)


def _upload_link(request: Request, principal: Principal) -> str:
    return _base_for_phones(request) + "u/" + request.app.state.upload_links.make(principal.username)


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request, principal: Principal = Depends(page_principal), service: StudyService = Depends(get_service)
) -> HTMLResponse:
    full = principal.scope == "full"
    link = _upload_link(request, principal) if full else None
    if full:
        recent = [study_out(r) for r in service.store.recent(8)]
        audit(request, principal, "list", detail="recent studies on /")
    else:
        mine = [service.store.get(s) for s in reversed(request.session.get("mine") or [])]
        recent = [study_out(r) for r in mine if r is not None]
    return render_page(
        request,
        "index.html",
        user=principal,
        public_url=_base_for_phones(request),
        qr=qr_svg(link) if link else None,
        link_minutes=service.settings.upload_link_minutes,
        models=service.engine.infos(),
        recent=recent,
        max_mb=service.settings.max_upload_mb,
    )


@router.get("/qr.svg")
def qr(request: Request, principal: Principal = Depends(page_principal)) -> Response:
    """QR code of a fresh upload link of the logged-in user (full logins only)."""
    if principal.scope != "full":
        raise ApiError(403, "forbidden", "an upload-only session cannot make upload links")
    return Response(
        qr_svg(_upload_link(request, principal)), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


@router.post("/upload")
def upload_form(
    request: Request,
    file: UploadFile = File(...),
    principal: Principal = Depends(page_principal),
    service: StudyService = Depends(get_service),
) -> Response:
    """Form upload for browsers without JavaScript: redirect to the result page."""
    try:
        check_upload_quota(request, principal)
        data = read_upload(file, service.settings.max_upload_bytes)
        rec, duplicate, _ = service.predict(data, file.filename)
    except ApiError as exc:
        audit(request, principal, "upload_refused", detail=f"{exc.status} {exc.error}")
        return render_page(request, "error.html", exc.status, error=exc)
    remember_upload(request, principal, rec.id)
    audit(request, principal, "upload", rec.id, "duplicate" if duplicate else "form")
    return RedirectResponse(f"/studies/{rec.id}" + ("?duplicate=1" if duplicate else ""), status_code=303)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    request: Request,
    study_id: str,
    duplicate: int = Query(0, ge=0, le=1),
    signed: int = Query(0, ge=0, le=1),
    principal: Principal = Depends(page_principal),
    service: StudyService = Depends(get_service),
) -> HTMLResponse:
    try:
        rec = readable_study(request, principal, service, study_id)
    except ApiError as exc:
        return render_page(request, "error.html", exc.status, error=exc)
    audit(request, principal, "read", rec.id, "page")
    return render_page(
        request,
        "study.html",
        s=study_out(rec),
        user=principal,
        duplicate=bool(duplicate),
        signed=bool(signed),
        message=None,
        max_name=MAX_NAME_CHARS,
        max_section=MAX_SECTION_CHARS,
    )


@router.post("/studies/{study_id}/sign-off", response_class=HTMLResponse)
def sign_off_form(
    request: Request,
    study_id: str,
    radiologist: str = Form(""),
    findings: str = Form(""),
    impression: str = Form(""),
    principal: Principal = Depends(page_principal),
    service: StudyService = Depends(get_service),
) -> Response:
    """The page's sign-off form: same rules and limits as ``POST /api/v1/studies/{id}/report/sign-off``."""
    try:
        rec = readable_study(request, principal, service, study_id)
    except ApiError as exc:
        return render_page(request, "error.html", exc.status, error=exc)
    try:
        if not principal.can_sign:
            raise ApiError(403, "forbidden", f"user {principal.username!r} ({principal.role}) may not sign reports off")
        try:
            body = SignOffIn(radiologist=radiologist or None, findings=findings or None, impression=impression or None)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ApiError(422, "invalid_sign_off", "; ".join(parts)) from None
        service.sign(study_id, signer_name(principal, body.radiologist), body.findings, body.impression)
    except ApiError as exc:
        return render_page(
            request,
            "study.html",
            exc.status,
            s=study_out(rec),
            user=principal,
            duplicate=False,
            signed=False,
            message=exc.reason,
            max_name=MAX_NAME_CHARS,
            max_section=MAX_SECTION_CHARS,
        )
    audit(request, principal, "sign_off", study_id, "page")
    return RedirectResponse(f"/studies/{study_id}?signed=1", status_code=303)
