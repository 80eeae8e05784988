"""The Open Inference Protocol (KServe V2, Triton's HTTP API) over the same models as ``/v1``.

Health and server metadata answer without the API key (probes); model metadata, readiness and
inference need it like ``/v1``. Inference goes through the same admission (busy -> 503 with
Retry-After), body cap (413) and decoder (415/413/400) as ``/v1/segment``; errors have the
protocol's shape, ``{"error": message}`` (plus ``code``). Tensors: service.http.oip_model.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from fcn import __version__
from service.errors import ImageError, ModelError
from service.http.admission import AdmissionRefused
from service.http.errors import ApiError, from_engine_error, unavailable
from service.http.oip import HEADER_LENGTH, ProtocolError, header_length
from service.http.oip_model import infer, metadata
from service.http.served_models import LoadedModel, ServedModels
from service.http.state import get_service, loaded_models, require_api_key
from service.http.upload import read_body

router = APIRouter(tags=["open inference protocol"])
keyed = APIRouter(tags=["open inference protocol"], dependencies=[Depends(require_api_key)])

Models = Annotated[ServedModels, Depends(loaded_models)]
EXTENSIONS = ["binary_tensor_data"]


class OipError(BaseModel):
    error: str
    code: str


def _errors(described: dict[int, str]) -> dict[int, dict]:
    return {status: {"model": OipError, "description": text} for status, text in described.items()}


def lookup(models: ServedModels, name: str, version: str | None = None) -> LoadedModel:
    """The model called ``name`` (at ``version``, when given).

    Raises:
        ApiError: 404 for an unknown name or a version that is not the one serving.
    """
    model = models.models.get(name)
    if model is None:
        raise ApiError(404, "unknown_model", models.unknown(name))
    if version is not None and version != model.version:
        raise ApiError(
            404,
            "unknown_version",
            f"model {name!r} serves version {model.version}, not {version!r}",
        )
    return model


def _model_headers(model: LoadedModel) -> dict[str, str]:
    return {"X-Model": model.name, "X-Model-Version": model.version}


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> dict:
    return {"name": "fcnseg", "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/health/live", summary="Liveness: the process answers")
async def live() -> dict:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    summary="Readiness: models loaded and not shutting down",
    responses=_errors({503: "loading or draining"}),
)
async def ready(request: Request) -> dict:
    service = get_service(request)
    if service.admission.draining:
        raise ApiError(503, "draining", "the service is shutting down", {"Retry-After": "1"})
    if service.models is None:
        raise ApiError(503, "not_ready", "models are still loading", {"Retry-After": "1"})
    return {"ready": True}


_MODEL_ERRORS = _errors({401: "missing or wrong API key", 404: "unknown model or version"})


@keyed.get("/v2/models/{name}", summary="Model metadata", responses=_MODEL_ERRORS)
@keyed.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model metadata (a version)",
    responses=_MODEL_ERRORS,
)
async def model_metadata(
    name: str, models: Models, response: Response, version: str | None = None
) -> dict:
    model = lookup(models, name, version)
    response.headers.update(_model_headers(model))
    return metadata(model)


@keyed.get("/v2/models/{name}/ready", summary="Model readiness", responses=_MODEL_ERRORS)
@keyed.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model readiness (a version)",
    responses=_MODEL_ERRORS,
)
async def model_ready(
    name: str, models: Models, response: Response, version: str | None = None
) -> dict:
    model = lookup(models, name, version)
    response.headers.update(_model_headers(model))
    return {"name": model.name, "ready": True}


_INFER_RESPONSES = {
    200: {
        "description": "the inference response: JSON, or JSON then binary tensors "
        f"({HEADER_LENGTH} gives the JSON's length)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **_errors(
        {
            400: "malformed request, corrupt image, or tensors that do not add up",
            401: "missing or wrong API key",
            404: "unknown model or version",
            408: "the request body stalled",
            413: "body, image or requested scores too large",
            415: "not an image / unsupported format, or a compressed body",
            422: "neither input 'image' nor 'pixels'",
            503: "busy or shutting down; see Retry-After",
        }
    ),
}


@keyed.post("/v2/models/{name}/infer", summary="Inference", responses=_INFER_RESPONSES)
@keyed.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference (a version)",
    responses=_INFER_RESPONSES,
)
async def model_infer(
    request: Request, name: str, models: Models, version: str | None = None
) -> Response:
    service = get_service(request)
    settings = service.settings
    model = lookup(models, name, version)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed",
        )
    try:
        with service.admission.accepted():
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
            json_length = header_length(request.headers.get(HEADER_LENGTH), len(body))
            result = await service.admission.run(
                infer, model, body, json_length, settings.max_body_bytes
            )
    except AdmissionRefused as rejected:
        raise unavailable(rejected, settings.retry_after_s) from None
    except ProtocolError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    except (ImageError, ModelError) as exc:
        raise from_engine_error(exc) from None
    service.metrics.inference.labels(model.name).observe(result.infer_ms / 1000.0)
    headers = {
        **_model_headers(model),
        "X-Inference-Ms": f"{result.infer_ms:.2f}",
        "X-Decode-Ms": f"{result.decode_ms:.2f}",
        "X-Image-Size": f"{result.width}x{result.height}",
    }
    if result.json_length is None:
        return Response(result.body, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(result.json_length)
    return Response(result.body, media_type="application/octet-stream", headers=headers)
