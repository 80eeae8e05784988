"""PNG files of class-index masks, written directly with zlib.

Masks are large runs of a few values. Pillow's PNG writer tries all five row filters on every
row and keeps the best, which is most of its cost on a mask and buys nothing there: unfiltered
rows compressed with zlib's run-length strategy are smaller (13 kB against 18 kB for a
512x512 mask of five classes) and take a third of the time (0.75 against 2.2 ms).

What is written is a plain PNG (signature, ``IHDR``, optional ``PLTE``, one ``IDAT``, ``IEND``,
no interlacing) that any decoder reads. Photos (the overlay) keep Pillow's filtered writer.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level for the masks: with the run-length strategy the level barely changes the size.
COMPRESS_LEVEL = 1
_GREY, _PALETTE = 0, 3  # PNG colour types


def _chunk(tag: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(tag))
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)


def _scanlines(mask: np.ndarray) -> bytes:
    """Every row prefixed with filter type 0 (none); 16-bit samples big-endian."""
    height, width = mask.shape
    row_bytes = width * mask.dtype.itemsize
    raw = np.zeros((height, row_bytes + 1), dtype=np.uint8)
    samples = mask.astype(">u2", copy=False) if mask.dtype == np.uint16 else mask
    raw[:, 1:] = np.ascontiguousarray(samples).view(np.uint8).reshape(height, row_bytes)
    return raw.tobytes()


def _png(mask: np.ndarray, colour_type: int, plte: bytes = b"") -> bytes:
    height, width = mask.shape
    if height < 1 or width < 1:
        raise ValueError(f"a PNG needs at least one pixel, got a {height}x{width} mask")
    depth = 8 * mask.dtype.itemsize
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = compressor.compress(_scanlines(mask)) + compressor.flush()
    chunks = [_chunk(b"IHDR", header)]
    if plte:
        chunks.append(_chunk(b"PLTE", plte))
    chunks += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return SIGNATURE + b"".join(chunks)


def grey_png(mask: np.ndarray) -> bytes:
    """An 8-bit (``uint8``) or 16-bit (``uint16``) greyscale PNG of ``(H, W)`` values.

    Raises:
        ValueError: not a non-empty 2-D ``uint8``/``uint16`` array.
    """
    if mask.ndim != 2 or mask.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W) uint8/uint16 mask, got {mask.dtype} {mask.shape}")
    return _png(mask, _GREY)


def palette_png(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """An 8-bit palette PNG: pixel ``v`` shows ``palette[v]``; indices past it are black.

    Raises:
        ValueError: not a non-empty 2-D ``uint8`` array, or more than 256 colours.
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 mask, got {mask.dtype} {mask.shape}")
    if len(palette) > 256:
        raise ValueError(f"a PNG palette holds at most 256 colours, got {len(palette)}")
    # All 256 entries, so that every uint8 value is a valid index (PNG requires it).
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return _png(mask, _PALETTE, table.tobytes())
