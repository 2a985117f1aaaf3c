"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` stores chest radiographs sent as ``multipart/related``.

Each ``application/dicom`` part goes through the web upload's code path
(:meth:`cxrtriage.serve.service.StudyService.predict`: limits, decoding with
de-identification, gates, models, store). The answer is the STOW-RS response
module of DICOM PS3.18 10.5.3 as DICOM JSON (``application/dicom+json``):
``ReferencedSOPSequence`` (0008,1199) for the stored instances and
``FailedSOPSequence`` (0008,1198) with a ``FailureReason`` (0008,1197) for the
refused ones (0x0122 not a CR/DX storage SOP class, 0xC000 cannot understand,
0xA700 out of resources), each with its SOP Class and Instance UIDs. Status:
200 all stored, 202 some stored, 409 none stored; 415 for a body that is not
``multipart/related; type="application/dicom"``.

The whole request counts against the upload size limit (``--max-upload-mb``).
With ``cxr serve --return-to AE@host:port`` (``ServeSettings.dicom_return_to``)
the SR and heatmap Secondary Capture of each stored instance are queued in the
outbox, as ``cxr listen`` does, and sent to that PACS.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.interop import (
    CANNOT_UNDERSTAND,
    CXR_STORAGE_SOP_CLASSES,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    failure_status,
    queue_results,
)
from cxrtriage.serve.schemas import ErrorOut
from cxrtriage.serve.security import Principal, audit, check_upload_quota, remember_upload, require_uploader
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.store import Study

__all__ = ["router", "split_multipart_related"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

#: DICOM JSON tags (PS3.18 F.2) of the STOW-RS response module.
_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILED_SOP_SEQUENCE = "00081198"
_SOP_CLASS = "00081150"
_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
_RETRIEVE_URL = "00081190"

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "All instances stored (DICOM JSON STOW-RS response)",
        "content": {"application/dicom+json": {}},
    },
    202: {"description": "Some instances stored, some refused (see FailedSOPSequence)"},
    409: {"description": "No instance stored (see FailedSOPSequence)"},
    **{
        c: {"model": ErrorOut, "description": text}
        for c, text in (
            (400, "Malformed multipart/related body"),
            (401, "Not logged in (HTTP Basic or the session cookie)"),
            (413, "Request larger than the upload limit"),
            (415, 'Not multipart/related; type="application/dicom"'),
            (429, "Upload quota exceeded (see the Retry-After header)"),
        )
    },
}


def split_multipart_related(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a ``multipart/related`` body (RFC 2387) as ``(content type, bytes)``.

    Parameters
    ----------
    content_type : str
        The request's ``Content-Type`` header, with its ``boundary`` parameter.
    body : bytes

    Returns
    -------
    list of (str, bytes)

    Raises
    ------
    ApiError
        415 not ``multipart/related`` or a ``type`` other than ``application/dicom``; 400 no boundary or no part.
    """
    ctype = content_type.split(";")[0].strip().lower()
    if ctype != "multipart/related":
        raise ApiError(
            415,
            "unsupported_media_type",
            f'Content-Type {ctype or "missing"}: multipart/related; type="application/dicom" expected',
        )
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    param = msg.get_param("type")
    declared = (param if isinstance(param, str) else "application/dicom").lower()
    if declared != "application/dicom":
        raise ApiError(
            415, "unsupported_media_type", f"multipart/related of type {declared}: only application/dicom is accepted"
        )
    if not msg.get_boundary() or not msg.is_multipart():
        raise ApiError(400, "bad_request", "multipart/related body without a boundary or parts")
    parts = []
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        parts.append((part.get_content_type(), payload if isinstance(payload, bytes) else b""))
    if not parts:
        raise ApiError(400, "bad_request", "multipart/related body with no part")
    return parts


def _uids(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UIDs of a DICOM file (empty when unreadable)."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - an unreadable part is refused below, with empty UIDs
        return "", ""


def _uid_attrs(sop_class: str, sop_instance: str) -> dict[str, Any]:
    return {
        _SOP_CLASS: {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        _SOP_INSTANCE: {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"},
    }


class _PartRefused(Exception):
    """A part that was not stored: its STOW-RS ``FailureReason`` (a DIMSE status) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def _store_part(
    request: Request, service: StudyService, n: int, ctype: str, data: bytes, sop_class: str
) -> tuple[Study, bool]:
    """Analyse and store one part, queue its results when ``dicom_return_to`` is set; :class:`_PartRefused` else."""
    if ctype != "application/dicom":
        raise _PartRefused(CANNOT_UNDERSTAND, f"part {n}: {ctype} is not application/dicom")
    if sop_class and sop_class not in CXR_STORAGE_SOP_CLASSES:
        raise _PartRefused(SOP_CLASS_NOT_SUPPORTED, f"part {n}: SOP Class {sop_class} is not CR/DX image storage")
    try:
        rec, duplicate, _ = await run_in_threadpool(service.predict, data, f"STOW-RS part {n}", source="stow")
    except ApiError as exc:
        raise _PartRefused(failure_status(exc), exc.reason) from None
    destination = service.settings.dicom_return_to
    if destination:
        try:  # the SR and heatmap for the PACS, sent by the outbox sender (cxr serve --return-to)
            await run_in_threadpool(queue_results, service, rec, data, destination)
        except Exception as exc:  # noqa: BLE001 - the study is stored; the client may send again
            log.exception("STOW-RS part %d: study %s stored, but building its results failed", n, rec.id)
            raise _PartRefused(PROCESSING_FAILURE, f"results not built ({exc.__class__.__name__})") from None
        wake = getattr(request.app.state, "wake_sender", None)
        if wake is not None:
            wake()
    return rec, duplicate


@router.post(
    "/studies",
    responses=_RESPONSES,
    response_class=JSONResponse,
    summary="STOW-RS: store DICOM chest radiographs (multipart/related; type=application/dicom)",
)
async def stow(
    request: Request,
    principal: Principal = Depends(require_uploader),
    service: StudyService = Depends(get_service),
) -> JSONResponse:
    """Analyse and store each ``application/dicom`` part; the DICOM JSON STOW-RS response.

    Body: ``Content-Type: multipart/related; type="application/dicom"; boundary=...``, one DICOM Part 10
    file per part (not described as an OpenAPI request body: OpenAPI tools cannot encode multipart/related).

    Each stored instance's ``RetrieveURL`` (0008,1190) is its cxrtriage study (JSON), not a WADO-RS URL.
    """
    check_upload_quota(request, principal)
    body = await request.body()
    parts = split_multipart_related(request.headers.get("content-type", ""), body)
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    base = str(request.base_url).rstrip("/")
    for n, (ctype, data) in enumerate(parts, 1):
        sop_class, sop_instance = await run_in_threadpool(_uids, data)
        try:
            rec, duplicate = await _store_part(request, service, n, ctype, data, sop_class)
        except _PartRefused as refused:
            audit(request, principal, "upload_refused", detail=f"stow-rs 0x{refused.status:04X} {refused}")
            failed.append(
                {**_uid_attrs(sop_class, sop_instance), _FAILURE_REASON: {"vr": "US", "Value": [refused.status]}}
            )
            continue
        remember_upload(request, principal, rec.id)
        audit(request, principal, "upload", rec.id, "stow-rs duplicate" if duplicate else "stow-rs")
        stored.append(
            {
                **_uid_attrs(sop_class, sop_instance),
                _RETRIEVE_URL: {"vr": "UR", "Value": [f"{base}/api/v1/studies/{rec.id}"]},
            }
        )
    out: dict[str, Any] = {}
    if stored:
        out[_REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": stored}
    if failed:
        out[_FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if stored else 409
    return JSONResponse(out, status_code=status, media_type="application/dicom+json")
