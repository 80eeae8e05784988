"""A model's versions and lineage, rollback, and the labelling loop's state.

``GET /v1/models/{name}/versions``: every version kept in the models folder (service/loop/store)
with its lineage; ``POST /v1/models/{name}/rollback`` ``{"version": "..."}``: make a kept version
live again (its file byte-identical to when it served) through the reload without downtime;
``GET /v1/training``: the loop's pending annotations and runs. API-key protected like every
admin route.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from service.http.errors import ApiError, error_responses
from service.http.reload import ReloadFailed, reload_models
from service.http.state import ServiceState, get_service, require_api_key
from service.loop.store import ModelStore, StoreError

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])
_ERRORS = error_responses(
    {
        401: "missing or wrong API key",
        404: "unknown model or version, or no models folder",
        409: "the reload failed; the version serving before still serves",
    }
)


class RollbackRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64, description="a version from /versions")


def _store(service: ServiceState, name: str) -> ModelStore:
    folder = service.settings.models_dir
    if folder is None:
        raise ApiError(404, "no_models_dir", "versions are kept only with FCN_MODELS_DIR set")
    try:
        store = ModelStore(folder, name)
    except (StoreError, ValueError) as exc:
        raise ApiError(404, "unknown_model", str(exc)) from None
    if not store.live_path.is_file():
        raise ApiError(404, "unknown_model", f"no {name}.onnx in the models folder")
    return store


@router.get("/v1/models/{name}/versions", summary="A model's kept versions", responses=_ERRORS)
async def versions(request: Request, name: str = PathParam(max_length=64)) -> dict:
    store = _store(get_service(request), name)
    return {"model": name, "live": store.live_version(), "versions": store.versions()}


@router.post("/v1/models/{name}/rollback", summary="Serve a kept version again", responses=_ERRORS)
async def rollback(
    request: Request, body: RollbackRequest, name: str = PathParam(max_length=64)
) -> dict:
    service = get_service(request)
    store = _store(service, name)
    try:
        store.path(body.version)
    except StoreError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from None
    previous = store.live_version()
    store.make_live(body.version)
    try:
        outcomes = await reload_models(service)
    except ReloadFailed as exc:
        raise ApiError(409, "reload_failed", str(exc)) from None
    mine = [o for o in outcomes if o.name == name]
    if not mine or mine[0].status == "failed":
        if previous is not None:
            store.make_live(previous)
            await reload_models(service)
        why = mine[0].error if mine else "the model was not reloaded"
        raise ApiError(409, "reload_failed", f"version {body.version} did not load: {why}")
    return {"model": name, "version": mine[0].version, "previous_version": previous}


@router.get("/v1/training", summary="The labelling loop: pending annotations and runs")
async def training(request: Request) -> dict:
    loop = get_service(request).training
    if loop is None:
        return {"enabled": False}
    return {"enabled": True, **loop.status()}
