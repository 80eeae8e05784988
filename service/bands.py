"""Inputs as GIS users have them: multi-band and 16-bit TIFFs, band selection, bit depth, nodata.

Pillow reads 8-bit RGB(A) and 16-bit grey TIFFs, but not what orthophotos often are: 16-bit
multi-band files (it refuses those without ``photometric=RGB`` and squeezes the others to 8
bits), or extra bands such as near-infrared (it drops them without a word). Those TIFFs are
read here with rasterio (the ``geo`` extra), by these rules (docs/gis-vectors.md, "Inputs"):

* **Bands.** As many bands as the model's channels are used as they are; an alpha band beyond
  them is a mask (below). Any other band count is refused with the option to use:
  ``bands=1,2,3`` picks bands by 1-based index, in the order given. Nothing is dropped silently.
* **Bit depth.** 16-bit data are scaled by 1/65535, except when every value is below 4096: then
  they are 12-bit data in a 16-bit container (most aerial cameras), scaled by 1/4095, and the
  answer carries a warning saying so.
* **Nodata.** Pixels equal to the file's nodata value in every band, or transparent in its alpha
  band, get no class: 255 in the mask.

What a decode noticed travels in :class:`InputNotes`, collected by :func:`collect_notes`
around a decode on the same thread (the HTTP route returns the warnings in a header).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.errors import CorruptImageError, UnsupportedFormatError

TWELVE_BIT_MAX = 4095
NO_CLASS = 255


@dataclass
class InputNotes:
    """What decoding one image noticed: warnings for the caller and the pixels with no data."""

    warnings: list[str] = field(default_factory=list)
    nodata: np.ndarray | None = None  # (H, W) bool, True where the input has no data


_NOTES: contextvars.ContextVar[InputNotes | None] = contextvars.ContextVar("notes", default=None)


@contextlib.contextmanager
def collect_notes() -> Iterator[InputNotes]:
    """Collect the notes of the decodes run inside the block (on this thread)."""
    notes = InputNotes()
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def note_warning(message: str) -> None:
    notes = _NOTES.get()
    if notes is not None and message not in notes.warnings:
        notes.warnings.append(message)


def note_nodata(nodata: np.ndarray | None) -> None:
    notes = _NOTES.get()
    if notes is not None and nodata is not None and nodata.any():
        notes.nodata = nodata


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` -> ``(3, 2, 1)``; None or empty -> None.

    Raises:
        ValueError: not a comma-separated list of band numbers from 1.
    """
    if not text or not text.strip():
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"bands must be band numbers from 1, like 1,2,3; got {text!r}") from None
    if any(b < 1 for b in bands):
        raise ValueError(f"bands are numbered from 1; got {text!r}")
    return bands


def rescale_16bit(array: np.ndarray) -> np.ndarray:
    """Apply the bit-depth rule to ``uint16`` pixels (12-bit data -> the full 16-bit range)."""
    if array.dtype != np.uint16 or array.size == 0:
        return array
    top = int(array.max())
    if top == 0 or top > TWELVE_BIT_MAX:
        return array
    note_warning(
        f"16-bit values all below 4096 (max {top}): read as 12-bit data, scaled by 1/4095 "
        "instead of 1/65535"
    )
    scaled = (array.astype(np.uint32) * 65535 + TWELVE_BIT_MAX // 2) // TWELVE_BIT_MAX
    return scaled.astype(np.uint16)


def needs_raster_reader(tags, bands: Sequence[int] | None) -> bool:
    """Whether a TIFF with these Pillow header tags must be read here rather than by Pillow."""
    if bands:
        return True
    if tags.get(262, 1) not in (0, 1, 2):  # palette, CMYK, YCbCr, CIELab: Pillow's own modes
        return False
    samples = int(tags.get(277, 1))
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    extra = tags.get(338, ())
    extra = extra if isinstance(extra, tuple) else (extra,)
    if samples > 1 and max(bits) > 8:
        return True  # Pillow squeezes 16-bit colour to 8 bits
    return samples > 4 or (samples == 4 and not set(extra) & {1, 2})  # 4th band not alpha


def _choose(count: int, alpha: int | None, in_channels: int, bands: Sequence[int] | None):
    """The 1-based bands to read, or an error naming the option to use."""
    if bands:
        if len(bands) != in_channels:
            raise UnsupportedFormatError(
                f"bands={','.join(map(str, bands))} selects {len(bands)} bands; the model takes "
                f"{in_channels}"
            )
        if max(bands) > count:
            raise UnsupportedFormatError(
                f"bands={','.join(map(str, bands))} asks for band {max(bands)}; the image has "
                f"{count}"
            )
        return list(bands)
    colour = count - (alpha is not None)
    if colour == in_channels:
        return [b for b in range(1, count + 1) if b != alpha]
    if colour == 1 and in_channels == 3:  # grey -> RGB, as Pillow converts
        return [next(b for b in range(1, count + 1) if b != alpha)] * 3
    example = ",".join(str(b) for b in range(1, in_channels + 1))
    raise UnsupportedFormatError(
        f"the image has {colour} data bands and the model takes {in_channels}; choose which "
        f"with bands= (e.g. bands={example}, 1-based, in the model's channel order)"
    )


def decode_raster(
    data: bytes, *, in_channels: int, max_pixels: int, max_side: int, bands=None
) -> np.ndarray:
    """Decode a TIFF with rasterio by the rules above: ``(H, W, in_channels)`` uint8/uint16.

    Raises:
        service.errors.GeoDependencyError: rasterio (the ``geo`` extra) is not installed.
        UnsupportedFormatError: a band count or data type the model cannot take.
        CorruptImageError: GDAL cannot read it.
        ImageTooLargeError: over a size limit (checked before any pixels are read).
    """
    from service.geo.crs import require
    from service.imaging import check_size

    rasterio = require("rasterio")
    try:
        with rasterio.MemoryFile(data) as memory, memory.open() as dataset:
            check_size(dataset.width, dataset.height, max_pixels=max_pixels, max_side=max_side)
            dtype = dataset.dtypes[0]
            if dtype not in ("uint8", "uint16"):
                raise UnsupportedFormatError(
                    f"TIFF samples of type {dtype}; send 8-bit or 16-bit unsigned integers"
                )
            interp = [c.name for c in dataset.colorinterp]
            alpha = interp.index("alpha") + 1 if "alpha" in interp else None
            chosen = _choose(dataset.count, alpha, in_channels, bands)
            pixels = np.moveaxis(dataset.read(chosen), 0, -1)
            nodata = _nodata(dataset, alpha, chosen, pixels)
    except rasterio.errors.RasterioError as exc:
        raise CorruptImageError(f"TIFF file is corrupt or unreadable by GDAL ({exc})") from None
    note_nodata(nodata)
    return np.ascontiguousarray(pixels)


def _nodata(dataset, alpha: int | None, chosen: list[int], pixels: np.ndarray):
    """``(H, W)`` True where the file says there is no data (alpha 0, or nodata in every band)."""
    masks = []
    if alpha is not None:
        masks.append(dataset.read(alpha) == 0)
    if dataset.nodata is not None:
        masks.append(np.all(pixels == dataset.nodata, axis=-1))
    if not masks:
        return None
    return np.logical_or.reduce(masks)
