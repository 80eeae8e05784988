"""The one table of output formats: name -> encode function, media type, file suffix, and what
it needs beyond the mask.

The HTTP routes, the batch runner and the web page all read :data:`ENCODERS`; the encoders
themselves live beside it (:mod:`~service.formats.raster`, :mod:`~service.formats.report`,
:mod:`~service.formats.shapes`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.formats.raster import (
    DEFAULT_ALPHA,
    Palette,
    color_png,
    confidence_png,
    index_png,
    outline_png,
    overlay_png,
)
from service.formats.report import class_report
from service.formats.shapes import DEFAULT_TOLERANCE, class_polygons, coco_rle, geojson
from service.geo.crs import DEFAULT_CRS
from service.geo.mask_tiff import mask_cog
from service.georef import GeoReference


@dataclass(frozen=True)
class EncodeRequest:
    """What an encoder may need: the mask, the decoded image and the model's description.

    Attributes:
        mask: ``(H, W)`` class indices.
        pixels: the decoded input (``service.imaging`` layout); only ``overlay`` and
            ``outline`` read it.
        palette: one ``[r, g, b]`` per class.
        classes: class names in index order.
        alpha: overlay colour weight in ``[0, 1]``.
        info: extra top-level fields of the JSON outputs (model name, timings, source, ...).
        counts: :func:`class_pixel_counts` of ``mask`` when already known (else the JSON
            encoder counts).
        confidence: the top class's probability per pixel (only ``scores`` reads it).
        tolerance: polygon simplification in pixels (``polygons``, ``geojson``).
        georef: where the image lies on the map (``geojson`` in map coordinates).
        crs: ``geojson`` on a GeoTIFF: ``"wgs84"`` (RFC 7946 longitude/latitude) or
            ``"native"`` (the GeoTIFF's CRS, named as GDAL reads it).
    """

    mask: np.ndarray
    pixels: np.ndarray | None
    palette: Palette
    classes: Sequence[str]
    alpha: float = DEFAULT_ALPHA
    info: Mapping[str, Any] = field(default_factory=dict)
    counts: np.ndarray | None = None
    confidence: np.ndarray | None = None
    tolerance: float = DEFAULT_TOLERANCE
    georef: GeoReference | None = None
    crs: str = DEFAULT_CRS


@dataclass(frozen=True)
class Encoder:
    """One output format: how to encode it, how to serve it, how to name its file.

    Attributes:
        needs_confidence: the engine must also return per-pixel probabilities.
        needs_georef: the source's GeoTIFF tags are read (map coordinates).
        requires_georef: only a georeferenced GeoTIFF input can be encoded (others: an error).
    """

    name: str
    media_type: str
    suffix: str
    encode: Callable[[EncodeRequest], bytes]
    description: str
    needs_confidence: bool = False
    needs_georef: bool = False
    requires_georef: bool = False

    def describe(self) -> dict[str, str]:
        """What ``/v1/models`` lists for this format."""
        return {
            "name": self.name,
            "media_type": self.media_type,
            "suffix": self.suffix,
            "description": self.description,
        }


def _encode_overlay(request: EncodeRequest) -> bytes:
    if request.pixels is None:
        raise ValueError("the overlay format needs the decoded image")
    return overlay_png(request.pixels, request.mask, request.palette, request.alpha)


def _encode_outline(request: EncodeRequest) -> bytes:
    if request.pixels is None:
        raise ValueError("the outline format needs the decoded image")
    return outline_png(request.pixels, request.mask, request.palette)


def _json(request: EncodeRequest, body: Mapping[str, Any], indent: int | None = None) -> bytes:
    return json.dumps({**request.info, **body}, indent=indent).encode()


def _encode_json(request: EncodeRequest) -> bytes:
    return _json(request, class_report(request.mask, request.classes, request.counts), indent=2)


def _encode_scores(request: EncodeRequest) -> bytes:
    if request.confidence is None:
        raise ValueError("the scores format needs the per-pixel probabilities")
    return confidence_png(request.confidence)


ENCODERS: dict[str, Encoder] = {
    encoder.name: encoder
    for encoder in (
        Encoder(
            "index",
            "image/png",
            "_mask.png",
            lambda r: index_png(r.mask),
            "class-index PNG (8-bit, 16-bit above 256 classes)",
        ),
        Encoder(
            "color",
            "image/png",
            "_color.png",
            lambda r: color_png(r.mask, r.palette),
            "the mask in the palette's colours",
        ),
        Encoder(
            "overlay",
            "image/png",
            "_overlay.png",
            _encode_overlay,
            "the colour mask blended over the image",
        ),
        Encoder(
            "outline",
            "image/png",
            "_outline.png",
            _encode_outline,
            "the image with the class borders drawn in the palette's colours",
        ),
        Encoder(
            "json",
            "application/json",
            ".json",
            _encode_json,
            "pixel count and fraction per class",
        ),
        Encoder(
            "coco-rle",
            "application/json",
            "_coco.json",
            lambda r: _json(r, coco_rle(r.mask, r.classes)),
            "COCO compressed RLE per class present",
        ),
        Encoder(
            "polygons",
            "application/json",
            "_polygons.json",
            lambda r: _json(r, class_polygons(r.mask, r.classes, r.tolerance)),
            "outer rings and holes per class present, in pixels",
        ),
        Encoder(
            "geojson",
            "application/geo+json",
            ".geojson",
            lambda r: _json(r, geojson(r.mask, r.classes, r.tolerance, r.georef, r.crs)),
            "a MultiPolygon feature per class present (from a GeoTIFF: WGS 84 lon/lat, "
            "or its own CRS with crs=native)",
            needs_georef=True,
        ),
        Encoder(
            "geotiff",
            "image/tiff",
            "_mask.tif",
            lambda r: mask_cog(r.mask, r.palette, r.classes, r.georef),
            "class-index Cloud-Optimized GeoTIFF with the input GeoTIFF's CRS and transform, "
            "colour table, nodata 255 (the geo extra)",
            needs_georef=True,
            requires_georef=True,
        ),
        Encoder(
            "scores",
            "image/png",
            "_scores.png",
            _encode_scores,
            "the chosen class's probability per pixel, 8-bit (0-255)",
            needs_confidence=True,
        ),
    )
}
FORMATS: tuple[str, ...] = tuple(ENCODERS)


def get_encoder(name: str) -> Encoder:
    """The encoder called ``name``.

    Raises:
        ValueError: an unknown format, naming the valid ones.
    """
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"unknown output format {name!r}; choose from {', '.join(FORMATS)}"
        ) from None


def parse_formats(text: str) -> list[str]:
    """``"index,color"`` -> ``["index", "color"]`` (order kept, repeats dropped).

    Raises:
        ValueError: empty, or a name that is not in :data:`ENCODERS`.
    """
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ValueError(f"no output format given; choose from {', '.join(FORMATS)}")
    for name in names:
        get_encoder(name)
    return names
