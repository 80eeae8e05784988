"""The one decode -> predict -> encode path that the HTTP service and the batch runner share.

Three stages, so a caller can run them on different threads (the batch runner decodes and
encodes in worker threads while ONNX Runtime runs), and :func:`segment` for the plain case:

* :func:`decode` bytes/path -> pixels, with the model's channels and the size limits;
* :func:`infer` pixels -> :class:`Segmentation` (mask of exactly the input's size);
* :func:`encode` a segmentation -> the bytes of one output format from
  :data:`service.formats.registry.ENCODERS`.

Errors are the typed ones of :mod:`service.errors` (``ImageError`` for the input,
``ModelError`` for the model); nothing here knows about HTTP or files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.bands import NO_CLASS, InputNotes, collect_notes
from service.engine import Engine
from service.formats.raster import DEFAULT_ALPHA
from service.formats.registry import EncodeRequest, get_encoder
from service.formats.shapes import DEFAULT_TOLERANCE
from service.geo.crs import DEFAULT_CRS
from service.georef import GeoReference, read_georeference
from service.imaging import Source


@dataclass(frozen=True)
class Segmentation:
    """One segmented image.

    Attributes:
        pixels: the decoded input, ``(H, W, C)`` (what ``overlay`` blends over).
        mask: ``(H, W)`` class indices, exactly the input's size after EXIF orientation.
        decode_ms: milliseconds spent decoding.
        infer_ms: milliseconds spent in normalise/pad/run/crop/argmax (tiling included).
        confidence: the top class's probability per pixel, when a format asked for it.
        georef: the GeoTIFF's placement on the map, when a format asked for it and it has one.
        warnings: what decoding noticed (12-bit data, ...), for the caller to pass on.
    """

    pixels: np.ndarray
    mask: np.ndarray
    decode_ms: float
    infer_ms: float
    confidence: np.ndarray | None = None
    georef: GeoReference | None = None
    warnings: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


@dataclass(frozen=True)
class Needs:
    """What the requested formats need beyond the mask (see :class:`service.formats.registry.Encoder`)."""

    confidence: bool = False
    georef: bool = False

    @classmethod
    def of(cls, formats: Iterable[str]) -> Needs:
        """Raises ValueError for an unknown format."""
        encoders = [get_encoder(f) for f in formats]
        return cls(
            confidence=any(e.needs_confidence for e in encoders),
            georef=any(e.needs_georef for e in encoders),
        )


def georeference(source: Source, needs: Needs) -> GeoReference | None:
    """The source's GeoTIFF placement when a format needs it (header only), else None."""
    return read_georeference(source) if needs.georef else None


def decode(
    engine: Engine,
    source: Source,
    bands: Sequence[int] | None = None,
    rescale: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float]:
    """Decode ``source`` for ``engine``'s model. Returns ``(pixels, milliseconds)``.

    ``bands`` picks TIFF bands (:mod:`service.bands`); ``rescale`` is a fixed range for the
    bit-depth rule (:mod:`service.rescale`; None: the default rule).

    Raises:
        service.errors.ImageError: not an allowed image, corrupt, over the size limits, or
            bands the model cannot take.
    """
    start = time.perf_counter()
    pixels = engine.decode(source, bands, rescale)
    return pixels, (time.perf_counter() - start) * 1000.0


def infer(
    engine: Engine,
    pixels: np.ndarray,
    decode_ms: float = 0.0,
    *,
    needs: Needs = Needs(),
    georef: GeoReference | None = None,
) -> Segmentation:
    """Run the model on decoded pixels (and the probabilities too when ``needs`` says so)."""
    start = time.perf_counter()
    confidence = None
    if needs.confidence:
        mask, confidence = engine.predict_confidence(pixels)
    else:
        mask = engine.predict(pixels)
    infer_ms = (time.perf_counter() - start) * 1000.0
    return Segmentation(pixels, mask, decode_ms, infer_ms, confidence, georef)


def segment(
    engine: Engine,
    source: Source,
    formats: Iterable[str] = ("index",),
    bands: Sequence[int] | None = None,
    rescale: tuple[float, float] | None = None,
) -> Segmentation:
    """Decode and run: the mask of one image, with what ``formats`` need besides.

    Pixels the input marks as nodata (GeoTIFF nodata value, alpha 0) get no class:
    :data:`service.bands.NO_CLASS` (255) in the mask.

    Raises:
        ValueError: an unknown format.
        service.errors.ImageError: see :func:`decode`.
    """
    needs = Needs.of(formats)
    with collect_notes() as notes:
        pixels, decode_ms = decode(engine, source, bands, rescale)
    seg = infer(engine, pixels, decode_ms, needs=needs, georef=georeference(source, needs))
    return with_notes(seg, notes)


def with_notes(seg: Segmentation, notes: InputNotes) -> Segmentation:
    """``seg`` with what its decode noticed: no class where the input has no data, warnings."""
    if notes.nodata is not None:
        seg.mask[notes.nodata] = NO_CLASS
        if seg.confidence is not None:
            seg.confidence[notes.nodata] = 0
    return replace(seg, warnings=tuple(notes.warnings))


def encode(
    engine: Engine,
    segmentation: Segmentation,
    fmt: str,
    *,
    alpha: float = DEFAULT_ALPHA,
    info: Mapping[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    counts: np.ndarray | None = None,
    crs: str = DEFAULT_CRS,
) -> bytes:
    """Encode a segmentation in output format ``fmt`` (see :data:`service.formats.registry.ENCODERS`).

    Args:
        engine: the engine that produced it (its metadata gives palette and class names).
        segmentation: from :func:`segment` / :func:`infer` (run for this format's needs).
        fmt: a format name from :data:`service.formats.registry.ENCODERS`.
        alpha: overlay colour weight.
        info: extra top-level fields of the JSON outputs.
        tolerance: polygon simplification in pixels (``polygons``, ``geojson``).
        counts: the mask's :func:`service.formats.report.class_pixel_counts`, if already counted.
        crs: ``geojson`` of a GeoTIFF: ``"wgs84"`` (RFC 7946) or ``"native"``.

    Raises:
        ValueError: an unknown format, an alpha outside ``[0, 1]``, a bad tolerance or crs, or
            ``scores`` for a segmentation run without probabilities.
        service.errors.GeoInputError: ``geojson`` in WGS 84 of a GeoTIFF without an EPSG code, or
            without the ``geo`` extra installed.
    """
    meta = engine.metadata
    request = EncodeRequest(
        mask=segmentation.mask,
        pixels=segmentation.pixels,
        palette=meta.palette,
        classes=meta.classes,
        alpha=alpha,
        info=dict(info or {}),
        confidence=segmentation.confidence,
        tolerance=tolerance,
        georef=segmentation.georef,
        counts=counts,
        crs=crs,
    )
    return get_encoder(fmt).encode(request)
