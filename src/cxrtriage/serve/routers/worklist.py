"""The radiologist's worklist: every study in AI-priority order, as a page (``/worklist``) and as JSON.

Order: unread first, then AI priority (the calibrated probability of a finding, highest first), then
oldest first (:func:`cxrtriage.store.reads.worklist_key`). Keyset pagination (``cursor``), filters for
status, flag, model, source and date, and the counts of unread (flagged) studies. The page polls the
JSON every few seconds, so new studies appear without a reload; ``j``/``k`` move, ``Enter`` opens.
"""

from __future__ import annotations

import datetime as _dt
from enum import StrEnum
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from cxrtriage.serve.deps import get_service, render_page
from cxrtriage.serve.schemas import ErrorOut, WorklistOut
from cxrtriage.serve.security import Principal, audit, page_principal, require_full
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.store import Study, png_bytes

router = APIRouter(tags=["worklist"])

#: Side of the worklist thumbnails, pixels.
THUMBNAIL_PX = 96

#: How often the page asks for new studies, milliseconds.
POLL_MS = 3000


class ReadStatus(StrEnum):
    unread = "unread"
    draft = "draft"
    signed = "signed"
    amended = "amended"


class Source(StrEnum):
    upload = "upload"
    pacs = "pacs"
    stow = "stow"


def _day(value: str | None, what: str, end: bool = False) -> str | None:
    """An ISO date or date-time as the ``received_at`` text it compares with (422 when malformed).

    A date alone as the ``end`` of a range includes that day (it becomes the next day's start).
    """
    if not value:
        return None
    try:
        if len(value) == 10:
            day = _dt.date.fromisoformat(value)
            return (day + _dt.timedelta(days=1) if end else day).isoformat()
        return _dt.datetime.fromisoformat(value).astimezone(_dt.UTC).isoformat(timespec="milliseconds")
    except ValueError:
        raise ApiError(422, "invalid_request", f"{what}: {value[:40]!r} is not an ISO 8601 date or time") from None


def worklist_item(st: Study) -> dict[str, Any]:
    """A study as one worklist row (JSON-ready)."""
    return {
        "study_id": st.id,
        "received_at": st.received_at,
        "source": st.source,
        "source_format": st.source_format,
        "priority": st.priority,
        "triage": st.triage,
        "read_status": st.read_status or "unread",
        "reference_label": st.reference_label,
        "signed_at": st.signed_at,
        "results": [
            {
                "model_name": r.model_name,
                "label": r.label,
                "flag": r.flag,
                "priority": r.priority,
                "applicable": r.applicable,
            }
            for r in st.results
        ],
        "thumbnail_url": f"/api/v1/worklist/thumbnails/{st.id}.png",
        "page_url": f"/studies/{st.id}",
    }


def _page(
    service: StudyService,
    status: ReadStatus | None,
    flag: bool | None,
    model: str | None,
    source: Source | None,
    since: str | None,
    until: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    rows, nxt = service.store.worklist(
        status=status.value if status else None,
        flag=flag,
        model=model or None,
        source=source.value if source else None,
        since=_day(since, "since"),
        until=_day(until, "until", end=True),
        cursor=cursor or None,
        limit=limit,
    )
    return {"counts": service.store.worklist_counts(), "items": [worklist_item(r) for r in rows], "next_cursor": nxt}


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Not logged in"},
    403: {"model": ErrorOut, "description": "Upload-only session"},
    422: {"model": ErrorOut, "description": "Invalid filter or cursor"},
}


@router.get(
    "/api/v1/worklist",
    response_model=WorklistOut,
    responses=_ERRORS,
    summary="The worklist: unread first, then AI priority (highest first), then oldest first",
)
def worklist_api(
    request: Request,
    status: ReadStatus | None = Query(None, description="unread, draft, signed or amended"),
    flag: bool | None = Query(None, description="only flagged (true) or unflagged (false) studies"),
    model: str | None = Query(
        None, max_length=200, description="only studies this model analysed (with flag: flagged)"
    ),
    source: Source | None = Query(None, description="upload, pacs or stow"),
    since: str | None = Query(None, max_length=40, description="received at or after (ISO 8601 date or time, UTC)"),
    until: str | None = Query(
        None, max_length=40, description="received before this time, or up to this date inclusive (ISO 8601, UTC)"
    ),
    cursor: str | None = Query(None, max_length=120, pattern=r"^[0-9a-f]+$", description="next_cursor of a page"),
    limit: int = Query(50, ge=1, le=500),
    poll: bool = Query(False, description="a background refresh of the worklist page (its load is audited, not these)"),
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> dict:
    out = _page(service, status, flag, model, source, since, until, cursor, limit)
    if not poll:
        audit(request, principal, "list", detail=f"worklist {len(out['items'])} rows")
    return out


@router.get(
    "/api/v1/worklist/thumbnails/{study_id}.png",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}}, "description": "PNG thumbnail"},
        404: {"model": ErrorOut, "description": "No such study"},
        **_ERRORS,
    },
    summary="Small thumbnail of a study's image for the worklist",
)
def thumbnail(
    request: Request,
    study_id: str = Path(..., min_length=1, max_length=64),
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> FileResponse:
    rec = service.get(study_id)
    path = service.store.derived_path(rec.id, "thumb")
    if not path.is_file():
        from PIL import Image

        img = Image.fromarray(np.asarray(service.store.load_image(rec.image_file)))
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        path = service.store.write_derived(rec.id, "thumb", png_bytes(img))
    audit(request, principal, "read", rec.id, "thumbnail.png")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/worklist", response_class=HTMLResponse, include_in_schema=False)
def worklist_page(
    request: Request,
    principal: Principal = Depends(page_principal),
    service: StudyService = Depends(get_service),
) -> HTMLResponse:
    if principal.scope != "full":
        return render_page(
            request, "error.html", 403, error=ApiError(403, "forbidden", "an upload-only session has no worklist")
        )
    audit(request, principal, "list", detail="worklist page")
    return render_page(
        request,
        "worklist.html",
        user=principal,
        models=service.model_names(),
        statuses=[s.value for s in ReadStatus],
        sources=[s.value for s in Source],
        q=dict(request.query_params),
        poll_ms=POLL_MS,
    )
