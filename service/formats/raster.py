"""Raster encoders: index, colour, overlay, outline and confidence PNGs of a mask.

Masks are ``(H, W)`` ``uint8``/``uint16`` class indices as returned by ``Engine.predict``.
The table that names each output format is :mod:`service.formats.registry`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from service.formats.png import grey_png, palette_png

# zlib level for the PNGs Pillow writes (overlays, RGB colour masks): level 6 (Pillow's
# default) costs seconds on an 8000x8000 image. Index and palette masks are written by
# service.formats.png (unfiltered rows, run-length zlib): smaller and three times faster on masks.
PNG_COMPRESS_LEVEL = 3

# Rows blended at a time by overlay(): bounds its temporary memory.
_OVERLAY_ROWS = 1024

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


def check_mask(mask: np.ndarray) -> None:
    if mask.ndim != 2 or mask.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W) uint8/uint16 mask, got {mask.dtype} {mask.shape}")


def index_png(mask: np.ndarray) -> bytes:
    """Encode class indices losslessly: 8-bit grey PNG, or 16-bit when the mask is uint16.

    Args:
        mask: ``(H, W)`` uint8 or uint16 (``Engine.predict`` picks uint16 above 256 classes).

    Returns:
        PNG bytes whose pixel values are the class indices.
    """
    check_mask(mask)
    return grey_png(mask)


def colorize(mask: np.ndarray, palette: Palette) -> np.ndarray:
    """Map class indices to ``(H, W, 3)`` uint8 colours; indices past the palette are black."""
    check_mask(mask)
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return lut[mask]


def color_png(mask: np.ndarray, palette: Palette) -> bytes:
    """Encode the mask in the palette's colours.

    Up to 256 classes this is a palette ("P") PNG — a third of the memory and size of RGB, and
    any viewer shows the colours; above that, RGB.
    """
    check_mask(mask)
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
    check_mask(mask)
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
