"""HTML pages: the upload page (with the QR code of its LAN URL) and one result page per study."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cxrtriage import DISCLAIMER
from cxrtriage.serve.deps import get_service, token_ok
from cxrtriage.serve.routers.predict import read_upload
from cxrtriage.serve.service import ApiError, StudyService, study_out

router = APIRouter(tags=["pages"], include_in_schema=False)


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    t = request.app.state.templates
    return t.TemplateResponse(request, name, {"disclaimer": DISCLAIMER, **ctx}, status_code=status)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, service: StudyService = Depends(get_service)) -> HTMLResponse:
    url = request.app.state.public_url
    return _render(
        request,
        "index.html",
        public_url=url,
        qr=request.app.state.qr_svg,
        model=service.engine.info(),
        recent=[study_out(r) for r in service.store.recent(8)],
        max_mb=service.settings.max_upload_mb,
    )


@router.get("/qr.svg")
def qr(request: Request) -> Response:
    return Response(request.app.state.qr_svg, media_type="image/svg+xml")


@router.post("/upload")
def upload_form(
    request: Request, file: UploadFile = File(...), service: StudyService = Depends(get_service)
) -> Response:
    """Form upload for browsers without JavaScript: redirect to the result page."""
    try:
        data = read_upload(file, service.settings.max_upload_bytes)
        rec, duplicate, _ = service.predict(data, file.filename)
    except ApiError as exc:
        return _render(request, "error.html", exc.status, error=exc)
    return RedirectResponse(f"/studies/{rec.id}" + ("?duplicate=1" if duplicate else ""), status_code=303)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    request: Request, study_id: str, duplicate: int = 0, signed: int = 0, service: StudyService = Depends(get_service)
) -> HTMLResponse:
    try:
        rec = service.get(study_id)
    except ApiError as exc:
        return _render(request, "error.html", exc.status, error=exc)
    return _render(
        request, "study.html", s=study_out(rec), duplicate=bool(duplicate), signed=bool(signed), message=None
    )


@router.post("/studies/{study_id}/sign-off", response_class=HTMLResponse)
def sign_off_form(
    request: Request,
    study_id: str,
    radiologist: str = Form(""),
    token: str = Form(""),
    findings: str = Form(""),
    impression: str = Form(""),
    service: StudyService = Depends(get_service),
) -> Response:
    try:
        rec = service.get(study_id)
        if not token_ok(service, token):
            raise ApiError(401, "unauthorized", "wrong or missing API token")
        service.sign(study_id, radiologist, findings or None, impression or None)
    except ApiError as exc:
        if exc.status == 404:
            return _render(request, "error.html", exc.status, error=exc)
        return _render(
            request, "study.html", exc.status, s=study_out(rec), duplicate=False, signed=False, message=exc.reason
        )
    return RedirectResponse(f"/studies/{study_id}?signed=1", status_code=303)
