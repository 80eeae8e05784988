"""The one decode -> predict -> encode path that the HTTP service and the batch runner share.

Three stages, so a caller can run them on different threads (the batch runner decodes and
encodes in worker threads while ONNX Runtime runs), and :func:`segment` for the plain case:

* :func:`decode` bytes/path -> pixels, with the model's channels and the size limits;
* :func:`infer` pixels -> :class:`Segmentation` (mask of exactly the input's size);
* :func:`encode` a segmentation -> the bytes of one output format from
  :data:`service.masks.ENCODERS`.

Errors are the typed ones of :mod:`service.errors` (``ImageError`` for the input,
``ModelError`` for the model); nothing here knows about HTTP or files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine import Engine
from service.imaging import Source
from service.masks import DEFAULT_ALPHA, EncodeRequest, get_encoder


@dataclass(frozen=True)
class Segmentation:
    """One segmented image.

    Attributes:
        pixels: the decoded input, ``(H, W, C)`` (what ``overlay`` blends over).
        mask: ``(H, W)`` class indices, exactly the input's size after EXIF orientation.
        decode_ms: milliseconds spent decoding.
        infer_ms: milliseconds spent in normalise/pad/run/crop/argmax (tiling included).
    """

    pixels: np.ndarray
    mask: np.ndarray
    decode_ms: float
    infer_ms: float

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


def decode(engine: Engine, source: Source) -> tuple[np.ndarray, float]:
    """Decode ``source`` for ``engine``'s model. Returns ``(pixels, milliseconds)``.

    Raises:
        service.errors.ImageError: not an allowed image, corrupt, or over the size limits.
    """
    start = time.perf_counter()
    pixels = engine.decode(source)
    return pixels, (time.perf_counter() - start) * 1000.0


def infer(engine: Engine, pixels: np.ndarray, decode_ms: float = 0.0) -> Segmentation:
    """Run the model on decoded pixels."""
    start = time.perf_counter()
    mask = engine.predict(pixels)
    return Segmentation(pixels, mask, decode_ms, (time.perf_counter() - start) * 1000.0)


def segment(engine: Engine, source: Source) -> Segmentation:
    """Decode and run: the mask of one image."""
    pixels, decode_ms = decode(engine, source)
    return infer(engine, pixels, decode_ms)


def encode(
    engine: Engine,
    segmentation: Segmentation,
    fmt: str,
    *,
    alpha: float = DEFAULT_ALPHA,
    info: Mapping[str, Any] | None = None,
    counts: np.ndarray | None = None,
) -> bytes:
    """Encode a segmentation in output format ``fmt`` (see :data:`service.masks.ENCODERS`).

    Args:
        engine: the engine that produced it (its metadata gives palette and class names).
        segmentation: from :func:`segment` / :func:`infer`.
        fmt: a format name: ``index``, ``color``, ``overlay`` or ``json``.
        alpha: overlay colour weight.
        info: extra top-level fields of the JSON report.
        counts: the mask's :func:`service.masks.class_pixel_counts`, if already counted.

    Raises:
        ValueError: an unknown format or an alpha outside ``[0, 1]``.
    """
    meta = engine.metadata
    request = EncodeRequest(
        mask=segmentation.mask,
        pixels=segmentation.pixels,
        palette=meta.palette,
        classes=meta.classes,
        alpha=alpha,
        info=dict(info or {}),
        counts=counts,
    )
    return get_encoder(fmt).encode(request)
