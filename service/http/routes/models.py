"""``GET /v1/models`` and ``/v1/models/{name}``: what each loaded model is, which one answers
by default, and the output formats it can answer in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.http.errors import ApiError, error_responses
from service.http.registry import ModelRegistry
from service.http.schemas import ModelInfo, ModelList
from service.http.state import loaded_models, require_api_key

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
async def list_models(models: Annotated[ModelRegistry, Depends(loaded_models)]) -> dict:
    return {"models": models.describe()}


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
    models: Annotated[ModelRegistry, Depends(loaded_models)],
    name: Annotated[str, Path(max_length=64, description="a loaded model's name")],
) -> dict:
    entry = models.describe_one(name)
    if entry is None:
        raise ApiError(404, "unknown_model", models.unknown(name))
    return entry
