"""``GET /v1/models``: what each loaded model is and which one answers by default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.http.errors import error_responses
from service.http.registry import ModelRegistry
from service.http.schemas import ModelList
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
