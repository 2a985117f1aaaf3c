"""Health and model information (the models' cards included)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.schemas import ErrorOut, HealthOut, ModelInfo
from cxrtriage.serve.service import ApiError, StudyService

router = APIRouter(prefix="/api/v1", tags=["system"])


@router.get("/health", response_model=HealthOut, summary="Liveness and readiness")
def health(service: StudyService = Depends(get_service)) -> dict:
    return service.health()


@router.get("/model", response_model=ModelInfo, summary="The first (default) serving model")
def model(service: StudyService = Depends(get_service)) -> dict:
    return service.engine.info()


@router.get("/models", response_model=list[ModelInfo], summary="Every model run on each upload, in order")
def models(service: StudyService = Depends(get_service)) -> list[dict]:
    return service.engine.infos()


@router.get(
    "/models/{name}/card",
    response_class=Response,
    responses={
        200: {"description": "The model card", "content": {"text/markdown": {"schema": {"type": "string"}}}},
        404: {"model": ErrorOut, "description": "No such model or no card"},
        422: {"model": ErrorOut, "description": "Invalid model name (too long)"},
    },
    summary="A loaded model's card (Markdown with YAML front matter)",
)
def card(name: str = Path(..., max_length=200), service: StudyService = Depends(get_service)) -> Response:
    try:
        m = service.engine.model(name)
    except KeyError:
        raise ApiError(404, "not_found", f"no loaded model {name[:80]!r}") from None
    f = m.model_dir / "README.md"
    if not f.is_file():
        raise ApiError(404, "not_found", f"model {m.model_name} has no model card (README.md)")
    return Response(f.read_text(encoding="utf-8"), media_type="text/markdown; charset=utf-8")
