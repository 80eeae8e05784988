"""Label Studio's ML-backend API on the running service: ``/label-studio/{health,setup,predict,
webhook}`` (the default model) and ``/label-studio/models/{name}/...`` (a named one).

In Label Studio: Project -> Settings -> Model -> Connect Model, URL
``http://fcn:8000/label-studio`` (docs/label-studio.md). Label Studio sends the project's
labelling config with every request; the model's class names are matched to its BrushLabels /
PolygonLabels by name. Each task's image is fetched under :mod:`service.labeling.fetch`'s rules,
then decoded, segmented and encoded through :mod:`service.pipeline` like ``POST /v1/segment``,
inside the same admission control, so Label Studio cannot crowd out other clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from service import pipeline
from service.errors import ImageError, ModelError
from service.http.admission import AdmissionRefused
from service.http.errors import ApiError, error_responses, from_engine_error, unavailable
from service.http.served_models import LoadedModel, ServedModels
from service.http.state import ServiceState, get_service, loaded_models, require_api_key
from service.labeling.fetch import CODES, FetchError, ImageFetcher
from service.labeling.label_studio import (
    Control,
    LabelConfig,
    LabelMatch,
    LabelStudioError,
    Region,
    match_labels,
    prediction,
)

logger = logging.getLogger(__name__)

PREFIX = "/label-studio"
_DEPENDENCIES = [Depends(require_api_key)]
router = APIRouter(prefix=PREFIX, tags=["label-studio"], dependencies=_DEPENDENCIES)
named = APIRouter(
    prefix=PREFIX + "/models/{model}", tags=["label-studio"], dependencies=_DEPENDENCIES
)


class SetupRequest(BaseModel):
    """What Label Studio sends when it connects (other fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    project: str | None = None
    label_config: str | None = Field(None, alias="schema")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    label_config: str = Field(description="the project's labelling config (XML)")
    project: str | None = None


def _model(models: ServedModels, name: str | None) -> LoadedModel:
    loaded = models.get(name)
    if loaded is None:
        raise ApiError(404, "unknown_model", models.unknown(name))
    return loaded


def _controls(loaded: LoadedModel, xml: str) -> list[tuple[Control, LabelMatch]]:
    """The config's segmentation controls paired with the model's classes.

    Raises:
        ApiError: 422 when the config has no such control or no label matches a class.
    """
    try:
        config = LabelConfig.parse(xml)
    except LabelStudioError as exc:
        raise ApiError(422, "label_config", str(exc)) from None
    classes = list(loaded.engine.metadata.classes)
    controls = [(c, match_labels(classes, c.labels)) for c in config.controls]
    if not any(match.matched for _, match in controls):
        offered = sorted({label for c, _ in controls for label in c.labels})
        raise ApiError(
            422,
            "label_mismatch",
            f"no label of the project matches a class of model {loaded.name!r}: the model has "
            f"{', '.join(classes)}; the project offers {', '.join(offered) or 'no labels'}. "
            "Name the <Label value=...> entries after the model's classes.",
        )
    return controls


def _fetcher(service: ServiceState) -> ImageFetcher:
    settings = service.settings
    token = settings.label_studio_token
    return ImageFetcher(
        base_url=settings.label_studio_url,
        token=token.get_secret_value() if token else None,
        allowed_hosts=tuple(settings.label_studio_allowed_hosts),
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.label_studio_timeout_s,
    )


def _predict_one(loaded: LoadedModel, data: bytes, controls: list) -> tuple[dict, float]:
    """Decode, segment (with probabilities) and encode one task (on an inference thread)."""
    engine = loaded.engine
    pixels, decode_ms = pipeline.decode(engine, data)
    seg = pipeline.infer(engine, pixels, decode_ms, needs=pipeline.Needs(confidence=True))
    region = Region(seg.mask, seg.confidence)
    return prediction(controls, region, loaded.version), seg.infer_ms


def _task_url(task: dict, key: str, number: int) -> str:
    data = task.get("data")
    label = f"task {task.get('id', number)}"
    if not isinstance(data, dict) or key not in data:
        raise ApiError(
            422, "task_data", f"{label} has no data.{key} (the field the config's Image reads)"
        )
    return data[key]


async def _health(request: Request, model: str | None) -> dict:
    service = get_service(request)
    if model is not None and service.models is not None:
        _model(service.models, model)
    models = list(service.models.models) if service.models is not None else []
    return {"status": "UP", "model_class": "fcnseg", "models": models}


async def _setup(
    request: Request, body: SetupRequest, models: ServedModels, model: str | None
) -> dict:
    loaded = _model(models, model)
    answer: dict[str, Any] = {"model_version": loaded.version}
    if body.label_config:
        controls = _controls(loaded, body.label_config)
        reports = [f"{c.name}: {m.report()}" for c, m in controls if m.report()]
        if reports:
            logger.warning("Label Studio project %s: %s", body.project, " | ".join(reports))
            answer["label_warnings"] = reports
    return answer


async def _predict(
    request: Request, body: PredictRequest, models: ServedModels, model: str | None
) -> dict:
    service = get_service(request)
    loaded = _model(models, model)
    controls = _controls(loaded, body.label_config)
    key = controls[0][0].image_key
    fetcher = _fetcher(service)
    results = []
    label = "task"
    try:
        with service.admission.accepted():
            for number, task in enumerate(body.tasks):
                label = f"task {task.get('id', number)}"
                url = _task_url(task, key, number)
                data = await asyncio.to_thread(fetcher.fetch, url)
                answer, infer_ms = await service.admission.run(_predict_one, loaded, data, controls)
                service.metrics.inference.labels(loaded.name).observe(infer_ms / 1000.0)
                results.append(answer)
    except AdmissionRefused as rejected:
        raise unavailable(rejected, service.settings.retry_after_s) from None
    except FetchError as exc:
        raise ApiError(CODES[exc.code], exc.code, f"{label}: {exc.message}") from None
    except ImageError as exc:
        error = from_engine_error(exc)
        raise ApiError(error.status, error.code, f"{label}: {error.message}") from None
    except ModelError as exc:
        raise from_engine_error(exc) from None
    return {"results": results, "model_version": loaded.version}


# Label Studio posts project events to /webhook (annotation created, START_TRAINING...). With
# FCN_LABEL_STUDIO_TRAIN=1 they drive the labelling loop (service/loop) of FCN_TRAIN_MODEL;
# otherwise, and for other models, they are acknowledged so Label Studio does not retry them.
_WEBHOOK = {"status": "ok"}


async def _webhook(request: Request, model: str | None) -> dict:
    service = get_service(request)
    loop = service.training
    if loop is None or (model is not None and model != loop.config.model):
        return _WEBHOOK
    try:
        event = await request.json()
    except ValueError:
        raise ApiError(400, "bad_json", "the webhook body is not JSON") from None
    if not isinstance(event, dict):
        raise ApiError(422, "webhook", "the webhook body is not a JSON object")
    return {**_WEBHOOK, "training": loop.notify(event)}


_ERRORS = error_responses(
    {
        400: "the body is not JSON",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "a task image is larger than FCN_MAX_BODY_BYTES",
        415: "a task image is not an image the service reads",
        422: "bad config, no matching label, task without its image, or an image URL refused",
        503: "busy, loading or shutting down; see Retry-After",
    }
)
Models = Annotated[ServedModels, Depends(loaded_models)]
ModelName = Annotated[str, PathParam(max_length=64, description="a loaded model's name")]
_HEALTH = "Label Studio: backend health"
_SETUP = "Label Studio: connect a project (answers the model version)"
_PREDICT = "Label Studio: pre-annotate tasks (brush RLE and/or polygons per class)"
_EVENTS = "Label Studio: project events (the labelling loop when on, else acknowledged)"


@router.get("/health", summary=_HEALTH)
async def health(request: Request) -> dict:
    return await _health(request, None)


@router.post("/setup", summary=_SETUP, responses=_ERRORS)
async def setup(request: Request, body: SetupRequest, models: Models) -> dict:
    return await _setup(request, body, models, None)


@router.post("/predict", summary=_PREDICT, responses=_ERRORS)
async def predict(request: Request, body: PredictRequest, models: Models) -> dict:
    return await _predict(request, body, models, None)


@router.post("/webhook", summary=_EVENTS)
async def webhook(request: Request) -> dict:
    return await _webhook(request, None)


@named.get("/health", summary=_HEALTH, responses=_ERRORS)
async def named_health(request: Request, model: ModelName) -> dict:
    return await _health(request, model)


@named.post("/setup", summary=_SETUP, responses=_ERRORS)
async def named_setup(
    request: Request, body: SetupRequest, models: Models, model: ModelName
) -> dict:
    return await _setup(request, body, models, model)


@named.post("/predict", summary=_PREDICT, responses=_ERRORS)
async def named_predict(
    request: Request, body: PredictRequest, models: Models, model: ModelName
) -> dict:
    return await _predict(request, body, models, model)


@named.post("/webhook", summary=_EVENTS, responses=_ERRORS)
async def named_webhook(request: Request, model: ModelName) -> dict:
    return await _webhook(request, model)
