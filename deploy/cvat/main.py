"""CVAT serverless (nuclio) function: automatic annotation with a model served by ``fcn serve``.

CVAT sends ``{"image": <base64 image>, "threshold": <float>}`` for each frame. The handler
forwards the image to the service twice (``/v1/segment?format=polygons&tolerance=0``: the exact
outline of every region; ``format=scores``: each pixel's top-class probability) and answers CVAT's
detector format, one entry per connected region of a class::

    {"label": "road", "type": "mask", "confidence": "0.87",
     "points": [x1, y1, x2, y2, ...],        # the region's outer outline (pixels)
     "mask": [0, 1, 1, ..., xtl, ytl, xbr, ybr]}   # its pixels in its box, row by row, + box

Regions whose mean confidence is below ``threshold`` are left out. The mask is exact: it holds
the region's pixels (holes stay holes), so CVAT's mask tool shows what ``/v1/segment`` returns.

Settings (environment of the function, function.yaml): ``FCN_URL`` (the service, e.g.
``http://fcnseg-api-1:8000``), ``FCN_MODEL`` (a served model's name; default: the service's default),
``FCN_API_KEY`` (when the service requires one), ``FCN_TIMEOUT_S`` (per request, default 120).
Only numpy and Pillow are needed; docs/cvat.md has the deployment steps.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image


class FunctionError(Exception):
    """A request CVAT should see as failed: ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def init_context(context) -> None:
    url = os.environ.get("FCN_URL", "http://fcnseg-api-1:8000").rstrip("/")
    context.user_data.service = url
    context.user_data.model = os.environ.get("FCN_MODEL") or None
    context.user_data.api_key = os.environ.get("FCN_API_KEY") or None
    context.user_data.timeout = float(os.environ.get("FCN_TIMEOUT_S", "120"))
    context.logger.info(f"fcnseg function: service {url}, model {context.user_data.model}")


def _segment(settings, image: bytes, fmt: str, **query) -> bytes:
    params = {"format": fmt, **query}
    if settings.model:
        params["model"] = settings.model
    url = f"{settings.service}/v1/segment?{urllib.parse.urlencode(params)}"
    headers = {"Content-Type": "application/octet-stream"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    request = urllib.request.Request(url, data=image, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = f"HTTP {exc.code}"
        status = exc.code if 400 <= exc.code < 500 else 502
        raise FunctionError(
            status, f"the segmentation service refused the image: {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FunctionError(
            502, f"cannot reach the segmentation service at {url}: {reason}"
        ) from None


def region_mask(rings: list, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of a polygon (outer ring and holes) in its box: those whose centre is inside.

    The service's rings at ``tolerance=0`` cover exactly the mask's pixels by that rule, so this
    gives the region's pixels back. Even-odd rule, row by row: each side crossing a row of pixel
    centres toggles "inside" for every pixel right of the crossing.
    """
    xtl, ytl, xbr, ybr = box
    points = [np.asarray(ring, np.float64) for ring in rings]
    start = np.concatenate([p[:-1] for p in points])
    end = np.concatenate([p[1:] for p in points])
    low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    # Rows whose centre y = row + 0.5 lies in [low, high) of each side.
    first = np.ceil(low - 0.5).astype(np.int64)
    count = np.maximum(np.ceil(high - 0.5).astype(np.int64) - first, 0)
    side = np.repeat(np.arange(len(start)), count)
    row = first[side] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    y = row + 0.5
    (x0, y0), (x1, y1) = start[side].T, end[side].T
    x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    column = np.floor(x - 0.5).astype(np.int64) + 1  # first pixel whose centre is right of x
    crossings = np.zeros((ybr - ytl + 1, xbr - xtl + 2), np.int32)
    np.add.at(crossings, (row - ytl, np.clip(column - xtl, 0, xbr - xtl + 1)), 1)
    return (np.cumsum(crossings, axis=1)[:, :-1] % 2).astype(bool)


def regions(polygons: dict, confidence: np.ndarray, threshold: float) -> list[dict]:
    """CVAT's detector entries from the service's polygons answer and the probability map."""
    out = []
    for cls in polygons["classes"]:
        for rings in cls["polygons"]:
            outer = np.asarray(rings[0], np.float64)
            xtl, ytl = (int(np.floor(v)) for v in outer.min(axis=0))
            xbr, ybr = (int(np.ceil(v)) - 1 for v in outer.max(axis=0))
            mask = region_mask(rings, (xtl, ytl, xbr, ybr))
            score = float(confidence[ytl : ybr + 1, xtl : xbr + 1][mask].mean())
            if score < threshold:
                continue
            out.append(
                {
                    "label": cls["name"],
                    "type": "mask",
                    "confidence": f"{score:.4f}",
                    "points": [round(v, 2) for v in outer[:-1].ravel().tolist()],
                    "mask": mask.astype(np.uint8).ravel().tolist() + [xtl, ytl, xbr, ybr],
                }
            )
    return out


def _decode_request(body) -> tuple[bytes, float]:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except ValueError:
            raise FunctionError(400, "the request body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise FunctionError(400, 'expected JSON {"image": <base64 image>, "threshold": <number>}')
    try:
        image = base64.b64decode(body["image"], validate=True)
    except (binascii.Error, ValueError):
        raise FunctionError(400, "'image' is not valid base64") from None
    try:
        threshold = float(body.get("threshold") or 0.0)
    except (TypeError, ValueError):
        raise FunctionError(400, "'threshold' must be a number") from None
    return image, threshold


def handler(context, event):
    try:
        image, threshold = _decode_request(event.body)
        polygons = json.loads(_segment(context.user_data, image, "polygons", tolerance=0))
        scores = _segment(context.user_data, image, "scores")
        with Image.open(io.BytesIO(scores)) as png:
            confidence = np.asarray(png, np.float32) / 255.0
        body, status = regions(polygons, confidence, threshold), 200
    except FunctionError as exc:
        context.logger.warn(exc.message)
        body, status = {"error": exc.message}, exc.status
    return context.Response(
        body=json.dumps(body),
        headers={},
        content_type="application/json",
        status_code=status,
    )
