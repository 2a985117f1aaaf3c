"""``POST /api/v1/predict``: upload one PNG, JPEG or DICOM and get the study back (login required)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Request, UploadFile

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.schemas import ErrorOut, PredictOut
from cxrtriage.serve.security import Principal, audit, check_upload_quota, remember_upload, require_uploader
from cxrtriage.serve.service import ApiError, StudyService, study_out

router = APIRouter(prefix="/api/v1", tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut, "description": text}
    for c, text in (
        (400, "Malformed multipart body"),
        (401, "Not logged in (HTTP Basic or the session cookie)"),
        (403, "Logged in, but not allowed to upload"),
        (413, "Upload larger than the limit"),
        (415, "Not a PNG, JPEG or DICOM file"),
        (422, "Unreadable image, not a radiograph, or a missing file field"),
        (429, "Upload quota exceeded (see the Retry-After header)"),
    )
}


def read_upload(file: UploadFile, limit: int) -> bytes:
    """Read at most ``limit`` bytes of an upload; 413 beyond that."""
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"upload larger than the {limit / 1e6:g} MB limit")
    return data


@router.post("/predict", response_model=PredictOut, responses=_ERRORS, summary="Analyse one chest radiograph")
def predict(
    request: Request,
    file: UploadFile = File(..., description="PNG, JPEG or DICOM (format sniffed from the content)"),
    principal: Principal = Depends(require_uploader),
    service: StudyService = Depends(get_service),
) -> dict:
    """Classify the image, build the heatmap and the draft report, store the study.

    Sending the same pixels again returns the stored study with ``duplicate = true``.
    Runs in the thread pool (a plain ``def``), the model itself under a lock.
    """
    try:
        check_upload_quota(request, principal)
        data = read_upload(file, service.settings.max_upload_bytes)
        rec, duplicate, timings = service.predict(data, file.filename)
    except ApiError as exc:
        audit(request, principal, "upload_refused", detail=f"{exc.status} {exc.error}")
        raise
    remember_upload(request, principal, rec.id)
    audit(request, principal, "upload", rec.id, "duplicate" if duplicate else "api")
    out = study_out(rec)
    out["duplicate"] = duplicate
    out["request_timings"] = timings
    return out
