"""Mask encoders: index/colour/overlay/outline/confidence PNGs, a JSON report, COCO RLE,
polygons, GeoJSON.

Masks are ``(H, W)`` ``uint8``/``uint16`` class indices as returned by ``Engine.predict``.
:data:`ENCODERS` is the one table of output formats (name -> encode function, media type,
file suffix, what it needs beyond the mask) that the HTTP routes, the batch runner and the web
page all read; the vector formats themselves live in :mod:`service.shapes`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from service.georef import GeoReference
from service.png import grey_png, palette_png
from service.shapes import DEFAULT_TOLERANCE, class_polygons, coco_rle, geojson

# zlib level for the PNGs Pillow writes (overlays, RGB colour masks): level 6 (Pillow's
# default) costs seconds on an 8000x8000 image. Index and palette masks are written by
# service.png (unfiltered rows, run-length zlib): smaller and three times faster on masks.
PNG_COMPRESS_LEVEL = 3

# Rows blended at a time by overlay(): bounds its temporary memory.
_OVERLAY_ROWS = 1024

# Pixels counted per np.bincount call in class_pixel_counts().
_COUNT_PIXELS = 1 << 22

# The overlay's colour weight: 0 shows the image alone, 1 the colour mask alone.
ALPHA_MIN, ALPHA_MAX = 0.0, 1.0
DEFAULT_ALPHA = 0.5

Palette = Sequence[Sequence[int]]


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a valid overlay colour weight, else ``ValueError`` giving the range."""
    if not ALPHA_MIN <= alpha <= ALPHA_MAX:
        raise ValueError(f"alpha must be in [{ALPHA_MIN:g}, {ALPHA_MAX:g}], got {alpha}")
    return alpha


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _check_mask(mask: np.ndarray) -> None:
    if mask.ndim != 2 or mask.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W) uint8/uint16 mask, got {mask.dtype} {mask.shape}")


def index_png(mask: np.ndarray) -> bytes:
    """Encode class indices losslessly: 8-bit grey PNG, or 16-bit when the mask is uint16.

    Args:
        mask: ``(H, W)`` uint8 or uint16 (``Engine.predict`` picks uint16 above 256 classes).

    Returns:
        PNG bytes whose pixel values are the class indices.
    """
    _check_mask(mask)
    return grey_png(mask)


def colorize(mask: np.ndarray, palette: Palette) -> np.ndarray:
    """Map class indices to ``(H, W, 3)`` uint8 colours; indices past the palette are black."""
    _check_mask(mask)
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return lut[mask]


def color_png(mask: np.ndarray, palette: Palette) -> bytes:
    """Encode the mask in the palette's colours.

    Up to 256 classes this is a palette ("P") PNG — a third of the memory and size of RGB, and
    any viewer shows the colours; above that, RGB.
    """
    _check_mask(mask)
    if mask.dtype == np.uint8 and len(palette) <= 256:
        return palette_png(mask, palette)
    return _png_bytes(Image.fromarray(colorize(mask, palette)))


def display_rgb(pixels: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 view of decoded pixels (grey replicated, alpha dropped)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def overlay(
    pixels: np.ndarray, mask: np.ndarray, palette: Palette, alpha: float = DEFAULT_ALPHA
) -> np.ndarray:
    """Alpha-blend the colour mask over the image: ``(1 - alpha) * image + alpha * colour``.

    Args:
        pixels: the decoded input, ``(H, W[, C])`` uint8/uint16/float (see service.imaging).
        mask: ``(H, W)`` class indices of the same size.
        palette: one ``[r, g, b]`` per class.
        alpha: colour weight in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    check_alpha(alpha)
    if pixels.shape[:2] != mask.shape:
        raise ValueError(f"image {pixels.shape[:2]} and mask {mask.shape} sizes differ")
    # Integer blend in row chunks: float32 copies of an 8000x8000 image would take gigabytes.
    weight = round(alpha * 256)
    out = np.empty((*mask.shape, 3), dtype=np.uint8)
    for y in range(0, mask.shape[0], _OVERLAY_ROWS):
        rows = slice(y, y + _OVERLAY_ROWS)
        base = display_rgb(pixels[rows]).astype(np.uint16) * (256 - weight)
        base += colorize(mask[rows], palette).astype(np.uint16) * weight
        out[rows] = (base + 128) >> 8
    return out


def overlay_png(
    pixels: np.ndarray, mask: np.ndarray, palette: Palette, alpha: float = DEFAULT_ALPHA
) -> bytes:
    """:func:`overlay` encoded as an RGB PNG."""
    return _png_bytes(Image.fromarray(overlay(pixels, mask, palette, alpha)))


def borders(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels with a 4-neighbour of another class (both sides of each border,
    so a line is two pixels wide, each half in its own class's colour)."""
    _check_mask(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    vertical = mask[1:] != mask[:-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def outline(pixels: np.ndarray, mask: np.ndarray, palette: Palette) -> np.ndarray:
    """The image with the borders between classes drawn in the classes' colours.

    Unlike :func:`overlay` the image keeps its own colours everywhere but on the borders, so
    a colourful photo stays readable.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    if pixels.shape[:2] != mask.shape:
        raise ValueError(f"image {pixels.shape[:2]} and mask {mask.shape} sizes differ")
    out = np.empty((*mask.shape, 3), dtype=np.uint8)
    # Row chunks with one row of context each side: bounded temporary memory.
    for y in range(0, mask.shape[0], _OVERLAY_ROWS):
        top, bottom = max(0, y - 1), min(mask.shape[0], y + _OVERLAY_ROWS + 1)
        rows = slice(y, min(mask.shape[0], y + _OVERLAY_ROWS))
        edge = borders(mask[top:bottom])[y - top : y - top + rows.stop - rows.start]
        out[rows] = display_rgb(pixels[rows])  # may be a read-only view of the input
        out[rows][edge] = colorize(mask[rows], palette)[edge]
    return out


def outline_png(pixels: np.ndarray, mask: np.ndarray, palette: Palette) -> bytes:
    """:func:`outline` encoded as an RGB PNG."""
    return _png_bytes(Image.fromarray(outline(pixels, mask, palette)))


def confidence_png(confidence: np.ndarray) -> bytes:
    """The top class's probability per pixel as an 8-bit grey PNG: ``round(255 * p)``.

    Args:
        confidence: ``(H, W)`` float probabilities in ``[0, 1]`` (``Engine.predict_confidence``).
    """
    if confidence.ndim != 2:
        raise ValueError(f"expected (H, W) probabilities, got shape {confidence.shape}")
    scaled = np.empty(confidence.shape, dtype=np.uint8)
    np.rint(np.clip(confidence, 0.0, 1.0) * np.float32(255.0), out=scaled, casting="unsafe")
    return grey_png(scaled)


def class_pixel_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``int64`` pixel count of each class ``0..num_classes-1`` in ``mask``.

    The one counter: the JSON report and the batch summary's fractions both come from it,
    and a batch asking for both counts once (``EncodeRequest.counts``).
    """
    _check_mask(mask)
    if num_classes <= 16:  # a few byte comparisons beat bincount's widening to int64
        return np.array([np.count_nonzero(mask == k) for k in range(num_classes)], np.int64)
    counts = np.zeros(num_classes, dtype=np.int64)
    # np.bincount widens its input to int64: count in row blocks, not 8 bytes per pixel at once.
    rows = max(1, _COUNT_PIXELS // max(1, mask.shape[1]))
    for y in range(0, mask.shape[0], rows):
        counts += np.bincount(mask[y : y + rows].ravel(), minlength=num_classes)[:num_classes]
    return counts


def class_report(
    mask: np.ndarray, classes: Sequence[str], counts: np.ndarray | None = None
) -> dict[str, Any]:
    """Per-class pixel counts and fractions, JSON-able.

    Args:
        mask: ``(H, W)`` class indices.
        classes: class names in index order.
        counts: :func:`class_pixel_counts` of ``mask``, when the caller has them already.

    Returns:
        ``{"height", "width", "pixels", "classes": [{"index", "name", "pixels", "fraction"}]}``
        with one entry per class (zero counts included), in class order.
    """
    if counts is None:
        counts = class_pixel_counts(mask, len(classes))
    total = int(mask.size)
    return {
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "pixels": total,
        "classes": [
            {
                "index": index,
                "name": name,
                "pixels": int(counts[index]),
                "fraction": float(counts[index]) / total if total else 0.0,
            }
            for index, name in enumerate(classes)
        ],
    }


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


@dataclass(frozen=True)
class Encoder:
    """One output format: how to encode it, how to serve it, how to name its file.

    Attributes:
        needs_confidence: the engine must also return per-pixel probabilities.
        needs_georef: the source's GeoTIFF tags are read (map coordinates).
    """

    name: str
    media_type: str
    suffix: str
    encode: Callable[[EncodeRequest], bytes]
    description: str
    needs_confidence: bool = False
    needs_georef: bool = False

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
            lambda r: _json(r, geojson(r.mask, r.classes, r.tolerance, r.georef)),
            "a MultiPolygon feature per class present (map coordinates from a GeoTIFF)",
            needs_georef=True,
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
