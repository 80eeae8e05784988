"""Inputs as GIS users have them: multi-band and 16-bit TIFFs, band selection, bit depth, nodata.

Pillow reads 8-bit RGB(A) and 16-bit grey TIFFs, but not what orthophotos often are: 16-bit
multi-band files (it refuses those without ``photometric=RGB`` and squeezes the others to 8
bits), or extra bands such as near-infrared (it drops them without a word). Those TIFFs are
read here with rasterio (the ``geo`` extra), by these rules (docs/gis-vectors.md, "Inputs"):

* **Bands.** As many bands as the model's channels are used as they are; an alpha band beyond
  them is a mask (below). Any other band count is refused with the option to use:
  ``bands=1,2,3`` picks bands by 1-based index, in the order given. Nothing is dropped silently.
* **Bit depth.** The rule of :mod:`service.rescale`, the same as ``fcn predict``'s raster path:
  8-bit data as they are; a fixed ``rescale=MIN,MAX`` mapped to 0..255; anything else (12-bit,
  16-bit, float) by each band's 2nd..98th percentile of a decimated sample. The rule applied is
  a warning of the answer.
* **Nodata.** Pixels equal to the file's nodata value in every band, transparent in its alpha
  band, or NaN, get no class: 255 in the mask.

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
from service.rescale import NoValidPixels, RescaleError, Scaling, choose_scaling, decimate

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
        notes.nodata = nodata if notes.nodata is None else notes.nodata | nodata


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


def _scaling(choose, nodata: np.ndarray | None) -> Scaling | None:
    """``choose()``'s scaling; a bad range is a typed error naming ``rescale``.

    None when the image has no valid pixel at all (``nodata`` everywhere: a tile off the edge
    of a mosaic): there is nothing to scale or segment, so it is decoded as zeros, its mask is
    nodata (255) everywhere, and the answer says so in its warnings. A sample that found no
    valid pixel in an image that has some is an error naming the fix.
    """
    try:
        return choose()
    except NoValidPixels:
        if nodata is None or not nodata.all():
            raise UnsupportedFormatError(
                "rescale=MIN,MAX: the image's sample has no valid pixel to take percentiles "
                "of; give a fixed range"
            ) from None
        note_nodata(nodata)
        note_warning("no valid pixel (every pixel is nodata): nothing segmented")
        return None
    except RescaleError as exc:
        raise UnsupportedFormatError(f"rescale=MIN,MAX: {exc}") from None


def rescale_pixels(
    pixels: np.ndarray, rescale: tuple[float, float] | None, nodata: np.ndarray | None = None
) -> np.ndarray:
    """Apply :mod:`service.rescale`'s rule to decoded ``(H, W, C)`` pixels -> uint8.

    8-bit pixels without ``rescale`` come back untouched; otherwise the rule applied is noted
    as a warning. ``nodata`` (``(H, W)`` True where there is no data) is left out of the
    percentiles, and so is NaN.
    """
    valid = None if nodata is None else ~nodata
    if np.issubdtype(pixels.dtype, np.floating):
        finite = np.isfinite(pixels).all(axis=-1)
        valid = finite if valid is None else valid & finite
    scaling = _scaling(
        lambda: choose_scaling(
            [pixels.dtype], pixels.shape[2], rescale, lambda: decimate(pixels, valid)
        ),
        None if valid is None else ~valid,
    )
    if scaling is None:
        return np.zeros(pixels.shape, np.uint8)
    if scaling.as_is:
        return pixels
    note_warning(scaling.describe(pixels.dtype))
    return scaling.apply_last(pixels)


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
    data: bytes,
    *,
    in_channels: int,
    max_pixels: int,
    max_side: int,
    bands=None,
    rescale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode a TIFF with rasterio by the rules above: ``(H, W, in_channels)`` uint8.

    The bit-depth rule samples the file as ``fcn predict``'s raster path does
    (:func:`service.geo.inputs.gdal_sample`), so both give the same pixels.

    Raises:
        service.errors.GeoDependencyError: rasterio (the ``geo`` extra) is not installed.
        UnsupportedFormatError: a band count or data type the model cannot take.
        CorruptImageError: GDAL cannot read it.
        ImageTooLargeError: over a size limit (checked before any pixels are read).
    """
    from service.geo.crs import require
    from service.geo.inputs import gdal_sample
    from service.imaging import check_size

    rasterio = require("rasterio")
    try:
        with rasterio.MemoryFile(data) as memory, memory.open() as dataset:
            check_size(dataset.width, dataset.height, max_pixels=max_pixels, max_side=max_side)
            dtype = dataset.dtypes[0]
            if np.dtype(dtype).kind not in "uif":
                raise UnsupportedFormatError(
                    f"TIFF samples of type {dtype}; send integer or floating-point samples"
                )
            interp = [c.name for c in dataset.colorinterp]
            alpha = interp.index("alpha") + 1 if "alpha" in interp else None
            chosen = _choose(dataset.count, alpha, in_channels, bands)
            raw = dataset.read(chosen)
            nodata = _nodata(dataset, alpha, raw)
            scaling = _scaling(
                lambda: choose_scaling(
                    [dataset.dtypes[b - 1] for b in chosen],
                    len(chosen),
                    rescale,
                    lambda: gdal_sample(dataset, tuple(chosen)),
                ),
                nodata,
            )
    except rasterio.errors.RasterioError as exc:
        raise CorruptImageError(f"TIFF file is corrupt or unreadable by GDAL ({exc})") from None
    note_nodata(nodata)
    if scaling is None:
        return np.zeros((*raw.shape[1:], raw.shape[0]), np.uint8)
    if not scaling.as_is:
        note_warning(scaling.describe(dtype))
    return np.ascontiguousarray(np.moveaxis(scaling.apply(raw), 0, -1))


def _nodata(dataset, alpha: int | None, raw: np.ndarray):
    """``(H, W)`` True where the file says there is no data (alpha 0, nodata in every band,
    or NaN in any)."""
    masks = []
    if alpha is not None:
        masks.append(dataset.read(alpha) == 0)
    if dataset.nodata is not None:
        masks.append(np.all(raw == dataset.nodata, axis=0))
    if np.issubdtype(raw.dtype, np.floating):
        masks.append(~np.isfinite(raw).all(axis=0))
    if not masks:
        return None
    return np.logical_or.reduce(masks)
