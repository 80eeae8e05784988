"""``POST /v1/segment``: one image in, its mask out (exactly the input's size).

Order of checks, cheapest first, so a refused request costs almost nothing: API key, query,
model name, admission (busy/draining -> 503 before the body is read), body cap while streaming,
then decode (pixel limits from the header) -> predict -> encode on an inference thread through
:mod:`service.pipeline`, the path the batch runner uses too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from service import pipeline
from service.bands import parse_bands
from service.errors import ImageError, ModelError
from service.formats.raster import ALPHA_MAX, ALPHA_MIN, DEFAULT_ALPHA
from service.formats.registry import ENCODERS
from service.formats.shapes import DEFAULT_TOLERANCE, MAX_TOLERANCE
from service.geo.crs import CRS_CHOICES, DEFAULT_CRS
from service.http.admission import AdmissionRefused
from service.http.errors import ApiError, error_responses, from_engine_error, unavailable
from service.http.schemas import output_content
from service.http.served_models import LoadedModel, ServedModels
from service.http.state import get_service, loaded_models, require_api_key
from service.http.upload import FIELD, read_image
from service.rescale import parse_rescale

# The bands= query of the routes that decode an upload (segment, preview).
BandsQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^\d{1,2}(,\d{1,2}){0,7}$",
        description="TIFF bands to use, 1-based, in the model's channel order "
        "(e.g. 1,2,3 of an RGB+NIR file); docs/gis-vectors.md",
    ),
]


# The rescale= query of the same routes: the fixed range of the bit-depth rule (service.rescale).
RescaleQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="map raw values MIN..MAX linearly to the model's 0..255 in every band, "
        "e.g. 0,4095 for 12-bit data (default: 8-bit as is, other depths each band's 2nd-98th "
        "percentile); as fcn predict --rescale; docs/gis-vectors.md",
    ),
]


def model_and_bands(
    models: ServedModels, model: str | None, bands: str | None, rescale: str | None = None
) -> tuple[LoadedModel, tuple[int, ...] | None, tuple[float, float] | None]:
    """The model a request names, its parsed bands and rescale range, or the 404 / 422 that
    says why not."""
    loaded = models.get(model)
    if loaded is None:
        raise ApiError(404, "unknown_model", models.unknown(model))
    try:
        chosen = parse_bands(bands)
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None
    try:
        return loaded, chosen, parse_rescale(rescale)
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"rescale: {exc}") from None


router = APIRouter(tags=["segment"], dependencies=[Depends(require_api_key)])

OutputFormat = Enum("OutputFormat", {name: name for name in ENCODERS}, type=str)
OutputCrs = Enum("OutputCrs", {name: name for name in CRS_CHOICES}, type=str)

_RESPONSES = {
    200: {
        "description": "the mask in the requested format: "
        + "; ".join(f"`{e.name}`: {e.description} ({e.media_type})" for e in ENCODERS.values()),
        "content": output_content(),
    },
    **error_responses(
        {
            400: "corrupt image or malformed body",
            401: "missing or wrong API key",
            404: "unknown model",
            408: "the request body stalled (FCN_BODY_TIMEOUT_S)",
            413: "body or image too large",
            415: "not an image / unsupported format or content type",
            422: "no image in the request, a bad parameter, or a georeference that cannot "
            "give the asked coordinates (GeoTIFF without EPSG code, geo extra missing)",
            503: "busy or shutting down; see Retry-After",
        }
    ),
}
# What the decoder accepts (service.imaging.ALLOWED_FORMATS); the bytes decide, not the header.
IMAGE_MEDIA_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "image/gif",
)
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FIELD],
                "properties": {FIELD: {"type": "string", "format": "binary"}},
            },
            "encoding": {FIELD: {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}},
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


@dataclass(frozen=True)
class Result:
    body: bytes
    width: int
    height: int
    decode_ms: float
    infer_ms: float
    encode_ms: float
    warnings: tuple[str, ...] = ()


def run_segmentation(
    loaded: LoadedModel,
    data: bytes,
    fmt: str,
    alpha: float,
    tolerance: float = DEFAULT_TOLERANCE,
    crs: str = DEFAULT_CRS,
    bands: tuple[int, ...] | None = None,
    rescale: tuple[float, float] | None = None,
) -> Result:
    """Decode, predict and encode one image (runs on an inference thread)."""
    engine = loaded.engine
    seg = pipeline.segment(engine, data, (fmt,), bands, rescale)
    info: dict = {
        "model": loaded.name,
        "model_version": loaded.version,
        "timings_ms": {"decode": round(seg.decode_ms, 2), "inference": round(seg.infer_ms, 2)},
    }
    if seg.warnings:
        info["warnings"] = list(seg.warnings)
    start = time.perf_counter()
    body = pipeline.encode(engine, seg, fmt, alpha=alpha, info=info, tolerance=tolerance, crs=crs)
    encode_ms = (time.perf_counter() - start) * 1000.0
    return Result(body, seg.width, seg.height, seg.decode_ms, seg.infer_ms, encode_ms, seg.warnings)


@router.post(
    "/v1/segment",
    summary="Segment one image",
    description="Send the image as multipart field `image` or as the raw body with "
    "`Content-Type: image/*`. The default answer is a single-channel PNG of class indices "
    "with exactly the input's width and height (after EXIF orientation).",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def segment(
    request: Request,
    models: Annotated[ServedModels, Depends(loaded_models)],
    format: Annotated[
        OutputFormat, Query(description="output format (docs/formats.md): " + ", ".join(ENCODERS))
    ] = OutputFormat.index,
    model: Annotated[str | None, Query(max_length=64, description="a loaded model's name")] = None,
    alpha: Annotated[
        float, Query(ge=ALPHA_MIN, le=ALPHA_MAX, description="overlay colour weight")
    ] = DEFAULT_ALPHA,
    tolerance: Annotated[
        float,
        Query(
            ge=0.0,
            le=MAX_TOLERANCE,
            description="polygons/geojson: simplification in pixels (0 = exact outlines)",
        ),
    ] = DEFAULT_TOLERANCE,
    crs: Annotated[
        OutputCrs,
        Query(
            description="geojson of a GeoTIFF: wgs84 = RFC 7946 longitude/latitude, no crs "
            "member; native = the GeoTIFF's own CRS, named as GDAL reads it"
        ),
    ] = OutputCrs.wgs84,
    bands: BandsQuery = None,
    rescale: RescaleQuery = None,
) -> Response:
    service = get_service(request)
    settings = service.settings
    loaded, chosen_bands, fixed_range = model_and_bands(models, model, bands, rescale)
    try:
        with service.admission.accepted():
            data = await read_image(request, settings.max_body_bytes, settings.body_timeout_s)
            result = await service.admission.run(
                run_segmentation,
                loaded,
                data,
                format.value,
                alpha,
                tolerance,
                crs.value,
                chosen_bands,
                fixed_range,
            )
    except AdmissionRefused as rejected:
        raise unavailable(rejected, settings.retry_after_s) from None
    except (ImageError, ModelError) as exc:
        raise from_engine_error(exc) from None
    service.metrics.inference.labels(loaded.name).observe(result.infer_ms / 1000.0)
    headers = {
        "X-Model": loaded.name,
        "X-Model-Version": loaded.version,
        "X-Backend": loaded.engine.backend_name,
        "X-Precision": loaded.engine.precision,
        "X-Inference-Ms": f"{result.infer_ms:.2f}",
        "X-Decode-Ms": f"{result.decode_ms:.2f}",
        "X-Encode-Ms": f"{result.encode_ms:.2f}",
        "X-Image-Size": f"{result.width}x{result.height}",
    }
    if result.warnings:
        headers["X-Input-Warnings"] = " | ".join(result.warnings)
    return Response(result.body, media_type=ENCODERS[format.value].media_type, headers=headers)
