"""``GET /v1/models`` and ``/v1/models/{name}``: what each loaded model is, which one answers
by default, and the output formats it can answer in; ``POST /v1/models/reload``: load changed
model files without downtime (service.http.reload)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from service.http.errors import ApiError, error_responses
from service.http.reload import ReloadFailed, reload_models
from service.http.schemas import ModelInfo, ModelList, ReloadReport
from service.http.served_models import ServedModels
from service.http.state import get_service, loaded_models, require_api_key

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get(
    "/v1/models",
    summary="The loaded models",
    response_model=None,
    responses={
        200: {"model": ModelList, "description": "the loaded models"},
        **error_responses({401: "missing or wrong API key", 503: "models still loading"}),
    },
)
async def list_models(models: Annotated[ServedModels, Depends(loaded_models)]) -> dict:
    return {"models": models.describe()}


@router.post(
    "/v1/models/reload",
    summary="Reload changed model files without downtime",
    description="Resolves the model specs and the models folder again. Each changed or new "
    "file is loaded beside the serving version, checked (metadata, a warm-up run) and swapped "
    "in at once; requests in flight finish on the version they started with. A model that "
    "fails keeps its old version serving. 200 when every model is unchanged, reloaded, added "
    "or removed; 422 (same body) when any failed. SIGHUP does the same.",
    response_model=None,
    responses={
        200: {"model": ReloadReport, "description": "what happened to each model"},
        422: {"model": ReloadReport, "description": "some model failed; its old version serves"},
        **error_responses(
            {
                401: "missing or wrong API key",
                409: "the model set cannot be resolved",
                503: "models still loading, or draining",
            }
        ),
    },
)
async def reload(
    request: Request, models: Annotated[ServedModels, Depends(loaded_models)]
) -> JSONResponse:
    service = get_service(request)
    if service.admission.draining:
        raise ApiError(503, "draining", "the service is shutting down", {"Retry-After": "1"})
    try:
        outcomes = await reload_models(service)
    except ReloadFailed as exc:
        raise ApiError(409, "reload_failed", f"nothing was reloaded: {exc}") from None
    ok = all(o.status != "failed" for o in outcomes)
    body = {"ok": ok, "models": [o.as_dict() for o in outcomes]}
    return JSONResponse(body, status_code=200 if ok else 422)


# After the reload route: for /v1/models/reload the first route whose path matches decides the
# Allow header of a 405, and it must name POST, not this GET.
@router.get(
    "/v1/models/{name}",
    summary="One loaded model and its output formats",
    response_model=None,
    responses={
        200: {"model": ModelInfo, "description": "the model"},
        **error_responses(
            {401: "missing or wrong API key", 404: "unknown model", 503: "models still loading"}
        ),
    },
)
async def describe_model(
    models: Annotated[ServedModels, Depends(loaded_models)],
    name: Annotated[str, Path(max_length=64, description="a loaded model's name")],
) -> dict:
    entry = models.describe_one(name)
    if entry is None:
        raise ApiError(404, "unknown_model", models.unknown(name))
    return entry
