"""Studies, their pictures and their reports; report sign-off (radiologists only).

Every endpoint needs a login (HTTP Basic or the session cookie) and writes an
audit-log row; upload-only phone sessions read only the studies they uploaded.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.schemas import (
    ErrorOut,
    HeatmapOut,
    ReportOut,
    ReportVersionList,
    SignOffIn,
    StudyList,
    StudyOut,
)
from cxrtriage.serve.security import (
    Principal,
    audit,
    readable_study,
    require_full,
    require_principal,
    require_radiologist,
    sign_as,
)
from cxrtriage.serve.service import ApiError, StudyService, study_out

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status code answers with an :class:`ErrorOut` JSON body."""
    return {c: {"model": ErrorOut, "description": _ERROR_TEXT[c]} for c in codes}


_ERROR_TEXT = {
    400: "Malformed request body (not parseable JSON)",
    401: "Not logged in (HTTP Basic or the session cookie)",
    403: "Logged in, but not allowed (role or upload-only session)",
    404: "No such study (or picture)",
    409: "Report already signed off (or, amending, not signed yet)",
    422: "Invalid path, query or body parameters",
}
_AUTH = _errors(401, 403, 422)
_404 = _errors(401, 403, 404, 422)

#: The PNG pictures: a binary body.
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"description": "PNG image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
}

#: The report downloads: JSON (the structured report), standalone HTML or PDF.
_REPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report as JSON (``report.json``), standalone HTML (``report.html``) or PDF (``report.pdf``)",
        "model": ReportOut,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

#: The original pixels: raw uint16 with their geometry in headers.
_U16: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Raw little-endian uint16 pixels, row-major; headers X-Width, X-Height, X-Offset (add to get "
        "modality values), X-Window-Center and X-Window-Width (the file's default window, if any)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

#: A study id: 16 lower-case hex characters.
_ID = Path(..., min_length=1, max_length=64, description="study id (16 hex characters)")

#: Largest ``offset`` of the list endpoint (far above any real archive; bigger values are a 422, not an overflow).
MAX_OFFSET = 1_000_000_000


class PictureKind(StrEnum):
    """The pictures of a study."""

    image = "image"
    annotated = "annotated"
    heatmap = "heatmap"
    lungs = "lungs"


class ReportFormat(StrEnum):
    """Report download formats."""

    json = "json"
    html = "html"
    pdf = "pdf"


@router.get("", response_model=StudyList, responses=_AUTH, summary="Recent studies, newest first")
def list_studies(
    request: Request,
    limit: int = Query(20, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> dict:
    audit(request, principal, "list", detail=f"limit={limit} offset={offset}")
    return {"studies": [study_out(r) for r in service.store.recent(limit, offset)], "total": service.store.count()}


@router.get("/{study_id}", response_model=StudyOut, responses=_404, summary="One study")
def get_study(
    request: Request,
    study_id: str = _ID,
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> dict:
    rec = readable_study(request, principal, service, study_id)
    audit(request, principal, "read", rec.id, "json")
    return study_out(rec)


@router.get(
    "/{study_id}/{kind}.png",
    responses={**_PNG, **_404},
    response_class=FileResponse,
    summary="Stored image, annotated image, heatmap overlay or lung contour (PNG)",
)
def picture(
    request: Request,
    kind: PictureKind,
    study_id: str = _ID,
    model: str | None = Query(
        None, max_length=200, description="model name whose annotation / heatmap is drawn (default: the first)"
    ),
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> FileResponse:
    rec = readable_study(request, principal, service, study_id)
    path = service.picture(rec, kind.value, model)
    audit(request, principal, "read", rec.id, f"{kind.value}.png")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{study_id}/report.{fmt}",
    responses={**_REPORT, **_404},
    response_model=None,
    response_class=Response,
    summary="Report download: json, html or pdf",
)
def report(
    request: Request,
    fmt: ReportFormat,
    study_id: str = _ID,
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> Response:
    rec = readable_study(request, principal, service, study_id)
    data, media = service.report_file(rec, fmt.value)
    audit(request, principal, "read", rec.id, f"report.{fmt.value}")
    headers = {"Cache-Control": "private, no-store"}
    if fmt is not ReportFormat.json:
        headers["Content-Disposition"] = f'attachment; filename="cxrtriage-report-{rec.id}.{fmt.value}"'
    return Response(content=data, media_type=media, headers=headers)


#: The FHIR answer: a DiagnosticReport as FHIR JSON.
_FHIR: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "FHIR R4 (4.3.0) DiagnosticReport with one contained Observation per model (class probabilities)",
        "content": {"application/fhir+json": {"schema": {"type": "object"}}},
    }
}


@router.get(
    "/{study_id}/fhir",
    responses={**_FHIR, **_404},
    response_model=None,
    response_class=Response,
    summary="The report as a FHIR DiagnosticReport (with Observations for the probabilities)",
)
def fhir(
    request: Request,
    study_id: str = _ID,
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> Response:
    """Built with ``fhir.resources`` and validated by it (:func:`cxrtriage.report.fhir.diagnostic_report`)."""
    import json

    from cxrtriage.report.fhir import diagnostic_report
    from cxrtriage.serve.interop import model_results

    rec = readable_study(request, principal, service, study_id)
    body = diagnostic_report(rec.id, rec.received_at, model_results(rec), report=rec.report)
    audit(request, principal, "read", rec.id, "fhir")
    return Response(
        content=json.dumps(body), media_type="application/fhir+json", headers={"Cache-Control": "private, no-store"}
    )


@router.post(
    "/{study_id}/report/sign-off",
    response_model=StudyOut,
    responses=_errors(400, 401, 403, 404, 409, 422),
    summary="Radiologist sign-off (or amendment) of the report, with the reader's call (radiologists only)",
)
def sign_off(
    request: Request,
    body: SignOffIn,
    study_id: str = _ID,
    principal: Principal = Depends(require_radiologist),
    service: StudyService = Depends(get_service),
) -> dict:
    """Sign the draft off, or with ``amend: true`` amend the signed report; every signature is a kept version."""
    rec = sign_as(service, principal, study_id, body)
    audit(request, principal, "amend" if body.amend else "sign_off", rec.id, "api")
    return study_out(rec)


@router.get(
    "/{study_id}/report/versions",
    response_model=ReportVersionList,
    responses=_404,
    summary="Every signed version of the report (signature and amendments), oldest first",
)
def report_versions(
    request: Request,
    study_id: str = _ID,
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> dict:
    rec = readable_study(request, principal, service, study_id)
    audit(request, principal, "read", rec.id, "report versions")
    return {"study_id": rec.id, "versions": [v.to_dict() for v in service.store.report_versions(rec.id)]}


@router.get(
    "/{study_id}/cam.json",
    response_model=HeatmapOut,
    responses=_404,
    summary="Class activation map of one model (normalised to [0, 1]) for the viewer's heatmap overlay",
)
def heatmap_data(
    request: Request,
    study_id: str = _ID,
    model: str | None = Query(None, max_length=200, description="model name (default: the first with a map)"),
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> dict:
    rec = readable_study(request, principal, service, study_id)
    maps = [m for m in service.heatmaps(rec) if model is None or m["model"] == model]
    if not maps:
        raise ApiError(404, "not_found", f"study {rec.id} has no heatmap" + (f" of model {model!r}" if model else ""))
    audit(request, principal, "read", rec.id, "cam.json")
    return maps[0]


@router.get(
    "/{study_id}/original.u16",
    responses={**_U16, **_404},
    response_class=Response,
    summary="Original 16-bit pixels of a DICOM upload (raw little-endian uint16, row-major), for window/level",
)
def original_pixels(
    request: Request,
    study_id: str = _ID,
    principal: Principal = Depends(require_principal),
    service: StudyService = Depends(get_service),
) -> Response:
    rec = readable_study(request, principal, service, study_id)
    data, headers = service.original_pixels(rec)
    audit(request, principal, "read", rec.id, "original.u16")
    return Response(content=data, media_type="application/octet-stream", headers=headers)
