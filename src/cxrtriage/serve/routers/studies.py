"""Studies, their pictures and their reports; report sign-off (token-protected)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse

from cxrtriage.serve.deps import get_service, require_token
from cxrtriage.serve.schemas import ErrorOut, SignOffIn, StudyList, StudyOut
from cxrtriage.serve.service import StudyService, study_out

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


@router.get("", response_model=StudyList, summary="Recent studies, newest first")
def list_studies(
    limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0), service: StudyService = Depends(get_service)
) -> dict:
    return {"studies": [study_out(r) for r in service.store.recent(limit, offset)], "total": service.store.count()}


@router.get("/{study_id}", response_model=StudyOut, responses=_404, summary="One study")
def get_study(study_id: str, service: StudyService = Depends(get_service)) -> dict:
    return study_out(service.get(study_id))


@router.get(
    "/{study_id}/{kind}.png",
    responses=_404,
    response_class=FileResponse,
    summary="Stored image, annotated image or heatmap overlay (PNG)",
)
def picture(study_id: str, kind: str, service: StudyService = Depends(get_service)) -> FileResponse:
    path = service.picture(service.get(study_id), kind)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{study_id}/report.{fmt}", responses=_404, summary="Report download: json, html or pdf")
def report(study_id: str, fmt: str, service: StudyService = Depends(get_service)) -> Response:
    data, media = service.report_file(service.get(study_id), fmt)
    headers = (
        {"Content-Disposition": f'attachment; filename="cxrtriage-report-{study_id}.{fmt}"'} if fmt != "json" else {}
    )
    return Response(content=data, media_type=media, headers=headers)


@router.post(
    "/{study_id}/report/sign-off",
    response_model=StudyOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    dependencies=[Depends(require_token)],
    summary="Radiologist sign-off of the draft report (needs the API token)",
)
def sign_off(study_id: str, body: SignOffIn, service: StudyService = Depends(get_service)) -> dict:
    return study_out(service.sign(study_id, body.radiologist, body.findings, body.impression))
