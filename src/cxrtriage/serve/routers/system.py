"""Health and model information."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.schemas import HealthOut, ModelInfo
from cxrtriage.serve.service import StudyService

router = APIRouter(prefix="/api/v1", tags=["system"])


@router.get("/health", response_model=HealthOut, summary="Liveness and readiness")
def health(service: StudyService = Depends(get_service)) -> dict:
    return service.health()


@router.get("/model", response_model=ModelInfo, summary="The serving model")
def model(service: StudyService = Depends(get_service)) -> dict:
    return service.engine.info()
