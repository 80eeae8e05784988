"""``/healthz`` (the process answers) and ``/readyz`` (models loaded, not draining)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.http.errors import ApiError, error_responses
from service.http.schemas import Health, Ready
from service.http.state import get_service

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness: the process answers (no model work, never queued)",
    response_model=None,
    responses={200: {"model": Health, "description": "the process answers"}},
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models loaded and not shutting down",
    response_model=None,
    responses={
        200: {"model": Ready, "description": "models loaded, not draining"},
        **error_responses({503: "loading or draining"}),
    },
)
async def readyz(request: Request) -> dict:
    service = get_service(request)
    if service.admission.draining:
        raise ApiError(503, "draining", "the service is shutting down", {"Retry-After": "1"})
    if service.models is None:
        raise ApiError(503, "not_ready", "models are still loading", {"Retry-After": "1"})
    return {"status": "ready", "models": list(service.models.models)}
