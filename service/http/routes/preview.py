"""``POST /v1/preview``: the uploaded image as a PNG a browser can show.

Browsers do not render TIFF, so the web page asks for this to put a GeoTIFF under its mask
overlay. The PNG is the image as the model sees it: decoded by the same path as
``/v1/segment`` (band selection, the bit-depth rule, the size limits; :mod:`service.bands`,
:mod:`service.rescale`), brought to 8-bit RGB, at exactly the input's width and height so that it lines up with the mask.
"""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from PIL import Image

from service.bands import collect_notes
from service.errors import ImageError, ModelError
from service.http.admission import AdmissionRefused
from service.http.errors import error_responses, from_engine_error, unavailable
from service.http.routes.segment import REQUEST_BODY, BandsQuery, RescaleQuery, model_and_bands
from service.http.served_models import LoadedModel, ServedModels
from service.http.state import get_service, loaded_models, require_api_key
from service.http.upload import read_image

router = APIRouter(tags=["segment"], dependencies=[Depends(require_api_key)])


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Decoded ``(H, W, C)`` uint8 pixels (every depth is 8-bit after the bit-depth rule of
    :mod:`service.rescale`) -> ``(H, W, 3)`` for display."""
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def render_preview(
    loaded: LoadedModel,
    data: bytes,
    bands: tuple[int, ...] | None,
    rescale: tuple[float, float] | None = None,
) -> bytes:
    """Decode for ``loaded``'s model and encode as an RGB PNG (runs on an inference thread)."""
    with collect_notes():
        pixels = loaded.engine.decode(data, bands, rescale)
    buffer = io.BytesIO()
    Image.fromarray(to_rgb8(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@router.post(
    "/v1/preview",
    summary="The image as a browser-viewable PNG",
    description="Decodes the image as `/v1/segment` does (TIFFs included) and returns it as "
    "an 8-bit RGB PNG of the same width and height, for display under a mask.",
    response_class=Response,
    responses={
        200: {"description": "RGB PNG", "content": {"image/png": {}}},
        **error_responses(
            {
                400: "corrupt image or malformed body",
                401: "missing or wrong API key",
                404: "unknown model",
                413: "body or image too large",
                415: "not an image, or bands the model cannot take",
                422: "no image in the request, a bad parameter, or the geo extra missing",
                503: "busy or shutting down; see Retry-After",
            }
        ),
    },
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def preview(
    request: Request,
    models: Annotated[ServedModels, Depends(loaded_models)],
    model: Annotated[str | None, Query(max_length=64, description="a loaded model's name")] = None,
    bands: BandsQuery = None,
    rescale: RescaleQuery = None,
) -> Response:
    service = get_service(request)
    settings = service.settings
    loaded, chosen, fixed_range = model_and_bands(models, model, bands, rescale)
    try:
        with service.admission.accepted():
            data = await read_image(request, settings.max_body_bytes, settings.body_timeout_s)
            body = await service.admission.run(render_preview, loaded, data, chosen, fixed_range)
    except AdmissionRefused as rejected:
        raise unavailable(rejected, settings.retry_after_s) from None
    except (ImageError, ModelError) as exc:
        raise from_engine_error(exc) from None
    return Response(body, media_type="image/png")
