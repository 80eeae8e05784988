"""Safe image decoding: format allowlist, size limits before pixels, EXIF orientation, modes.

``decode_image`` turns untrusted bytes (or a path) into an ``(H, W, C)`` array whose channel
count is the model's ``in_channels`` (1 = L, 3 = RGB, 4 = RGBA), keeping the source precision:

``uint8``: 8-bit sources as they are, and 12-bit, 16-bit (``I;16*``, ``I``) and float (``F``)
sources mapped to 0..255 by the bit-depth rule of :mod:`service.rescale` (each band's 2-98
percentile of a sample, or a fixed ``rescale=MIN,MAX``), the same rule as ``fcn predict``'s
raster path. :func:`to_array` (training's reader) keeps ``uint16``/``float32`` instead;
``pixel_scale(array)`` gives the factor that maps such arrays to ``[0, 1]`` (docs/contracts.md).
Every failure raises a subclass of :class:`service.errors.ImageError`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from service.bands import decode_raster, needs_raster_reader, note_nodata, rescale_pixels
from service.errors import CorruptImageError, ImageTooLargeError, UnsupportedFormatError

logger = logging.getLogger(__name__)

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ALLOWED_LABEL = "PNG, JPEG, WebP, BMP, TIFF or GIF"
# File suffixes of those formats: what folder scans (batch, training data, calibration) pick up.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Leading bytes of the allowed formats: a file that starts like one of these but does not
# decode is corrupt, anything else is an unsupported format.
_ALLOWED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
# A few common formats we refuse, so the message can name them instead of "not an image".
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"P1", "PBM"),
    (b"P2", "PGM"),
    (b"P3", "PPM"),
    (b"P4", "PBM"),
    (b"P5", "PGM"),
    (b"P6", "PPM"),
)

# GDAL's nodata value, an ASCII TIFF tag
GDAL_NODATA = 42113

# Pixels converted to numpy per strip (see _as_numpy).
_STRIP_PIXELS = 1 << 22

Source = bytes | str | os.PathLike | BinaryIO


def sniff_format(head: bytes) -> tuple[str | None, bool]:
    """Guess a format from a file's first bytes.

    Returns:
        ``(name, allowed)``; ``name`` is ``None`` when the bytes match nothing we know.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", True
    for magic, name in _ALLOWED_MAGIC:
        if head.startswith(magic):
            return name, True
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return f"ISO media ({brand or 'unknown'}, e.g. HEIC/AVIF)", False
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return name, False
    return None, False


def check_size(width: int, height: int, *, max_pixels: int, max_side: int) -> None:
    """Raise :class:`ImageTooLargeError` if ``width x height`` exceeds either limit."""
    if width < 1 or height < 1:
        raise CorruptImageError(f"image declares an empty size ({width}x{height})")
    if width > max_side or height > max_side:
        raise ImageTooLargeError(
            f"image is {width}x{height}; the longest side allowed is {max_side} pixels"
        )
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


def as_stream(source: Source) -> tuple[BinaryIO, bool]:
    """Return a seekable binary stream and whether we opened it (and must close it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, str | os.PathLike):
        return open(source, "rb"), True  # closed by the caller
    return source, False


def open_image(source: Source, *, max_pixels: int, max_side: int) -> Image.Image:
    """Open, size-check, load and EXIF-orient the first frame of an image.

    The size limits are checked against the header before any pixel buffer is allocated.

    Args:
        source: raw bytes, a path, or a seekable binary file object.
        max_pixels: the largest ``width * height`` accepted.
        max_side: the largest width or height accepted.

    Returns:
        A loaded PIL image, oriented so that EXIF orientation 1 applies.

    Raises:
        UnsupportedFormatError: not one of the allowed formats.
        CorruptImageError: empty, truncated or undecodable.
        ImageTooLargeError: over a limit (detected from the header).
        OSError: ``source`` is a path that cannot be opened.
    """
    stream, owned = as_stream(source)
    try:
        head = stream.read(16)
        stream.seek(0)
        if not head:
            raise CorruptImageError("the file is empty")
        name, allowed = sniff_format(head)
        if not allowed:
            what = f"a {name} file" if name else "not a recognised image"
            raise UnsupportedFormatError(f"unsupported image format: {what}; send {ALLOWED_LABEL}")
        return _decode(stream, name or "image", max_pixels=max_pixels, max_side=max_side)
    finally:
        if owned:
            stream.close()


# The pixel count in Pillow's DecompressionBombError ("Image size (N pixels) exceeds ...").
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _bomb_error(exc: Image.DecompressionBombError, max_pixels: int) -> ImageTooLargeError:
    """Pillow's bomb error in the service's words: its own limit, not Pillow's."""
    match = _BOMB_PIXELS.search(str(exc))
    size = f"{int(match.group(1))} pixels" if match else "more pixels than Pillow decodes"
    return ImageTooLargeError(f"image is too large: {size}; the limit is {max_pixels}")


def _decode(stream: BinaryIO, name: str, *, max_pixels: int, max_side: int) -> Image.Image:
    # Pillow's own bomb check runs inside Image.open with a global limit (error above twice
    # MAX_IMAGE_PIXELS). Ours is per call and runs next, so silence Pillow's warning, translate
    # its error into ours (the user sees the service's limit, which is never above Pillow's
    # unless raised below), and lift its limit when the operator configured a larger one.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise _bomb_error(exc, max_pixels) from None
        except Exception as exc:  # Pillow raises many types for bad headers
            logger.debug("header parse failed", exc_info=True)
            raise CorruptImageError(f"{name} file is corrupt or truncated ({exc})") from exc
    try:
        width, height = image.size
        check_size(width, height, max_pixels=max_pixels, max_side=max_side)
        image.seek(0)  # first frame of GIF/TIFF/WebP animations
        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise _bomb_error(exc, max_pixels) from None
        except Exception as exc:
            logger.debug("decode failed", exc_info=True)
            raise CorruptImageError(f"{name} file is corrupt or truncated ({exc})") from exc
        _orient(image)
        return image
    except BaseException:
        image.close()
        raise


def _orient(image: Image.Image) -> None:
    """Apply the EXIF orientation in place; a broken EXIF block is logged, not fatal."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # phones write odd EXIF; the pixels are still good
        logger.warning("ignoring unreadable EXIF orientation", exc_info=True)


def to_array(image: Image.Image, in_channels: int) -> np.ndarray:
    """Convert a loaded image to ``(H, W, in_channels)`` keeping 16-bit and float precision.

    Args:
        image: a loaded PIL image in any mode.
        in_channels: 1 (grey), 3 (RGB) or 4 (RGBA).

    Returns:
        ``uint8``, ``uint16`` or ``float32`` array (see the module docstring).

    Raises:
        ValueError: ``in_channels`` is not 1, 3 or 4.
        UnsupportedFormatError: a mode Pillow cannot convert.
    """
    if in_channels not in (1, 3, 4):
        raise ValueError(f"in_channels must be 1, 3 or 4, got {in_channels}")
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        grey = _wide_grey(image)
        return _grey_to_channels(grey, in_channels)
    if mode == "P":
        # Palette transparency only survives a conversion through RGBA.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    target = {1: "L", 3: "RGB", 4: "RGBA"}[in_channels]
    try:
        converted = image if image.mode == target else image.convert(target)
    except (ValueError, OSError) as exc:
        raise UnsupportedFormatError(f"unsupported pixel mode {mode!r} ({exc})") from exc
    array = _as_numpy(converted)
    return array.reshape(array.shape[0], array.shape[1], in_channels)


def _as_numpy(image: Image.Image) -> np.ndarray:
    """``np.asarray(image)`` in row strips.

    ``np.asarray`` goes through ``Image.tobytes``, which joins a list of chunks: three copies of
    the pixels at once. Strips keep the peak at the image plus the array (matters at 8000x8000).
    """
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // width)
    if rows >= height:
        return np.asarray(image)
    first = np.asarray(image.crop((0, 0, width, rows)))
    out = np.empty((height, *first.shape[1:]), dtype=first.dtype)
    out[:rows] = first
    for y in range(rows, height, rows):
        out[y : y + rows] = np.asarray(image.crop((0, y, width, min(height, y + rows))))
    return out


def _wide_grey(image: Image.Image) -> np.ndarray:
    """A 16-bit or float grey image as ``uint16`` / ``float32`` ``(H, W)``."""
    array = _as_numpy(image)
    if image.mode == "F":
        return np.nan_to_num(np.clip(array.astype(np.float32), 0.0, 1.0), nan=0.0)
    # "I" is 32-bit signed in Pillow but holds 16-bit data from PNG/TIFF: clip to that range.
    return np.clip(array, 0, 65535).astype(np.uint16)


def _grey_to_channels(grey: np.ndarray, in_channels: int) -> np.ndarray:
    if in_channels == 1:
        return grey[:, :, None]
    planes = [grey] * 3
    if in_channels == 4:
        opaque = np.float32(1.0) if grey.dtype == np.float32 else np.iinfo(grey.dtype).max
        planes.append(np.full_like(grey, opaque))
    return np.stack(planes, axis=-1)


def pixel_scale(array: np.ndarray) -> float:
    """The factor mapping ``array``'s values to ``[0, 1]``: 1/255, 1/65535 or 1 (float)."""
    if array.dtype == np.uint8:
        return 1.0 / 255.0
    if array.dtype == np.uint16:
        return 1.0 / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return 1.0
    raise ValueError(f"expected a uint8, uint16 or float image array, got {array.dtype}")


def normalise_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(h, w, C)`` uint8/uint16/float pixels -> normalised ``float32 (C, h, w)``.

    ``(x * scale - mean) / std`` as one affine per channel, ``x * (scale / std) - mean / std``,
    written straight into the ``(C, h, w)`` layout: the engine and the reference check of
    :mod:`service.backends.reference` both call it, so they compute the same bits.
    """
    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    shift = np.asarray(mean, dtype=np.float32) * inv_std
    factor = (np.float32(pixel_scale(pixels)) * inv_std)[:, None, None]
    out = np.empty((pixels.shape[2], *pixels.shape[:2]), dtype=np.float32)
    np.multiply(pixels.transpose(2, 0, 1), factor, out=out, dtype=np.float32)
    out -= shift[:, None, None]
    return out


def decode_image(
    source: Source,
    *,
    in_channels: int,
    max_pixels: int,
    max_side: int,
    bands: Sequence[int] | None = None,
    rescale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode untrusted input into the ``(H, W, in_channels)`` array the engine expects.

    TIFFs that Pillow cannot read faithfully (16-bit multi-band, extra bands, ``bands=``) go
    through :mod:`service.bands` (rasterio); every source follows the bit-depth rule of
    :mod:`service.rescale` (noted as a warning when it changes the values), and nodata/alpha
    pixels are reported to :func:`service.bands.collect_notes`.

    Args:
        source: raw bytes, a path, or a seekable binary file object.
        in_channels: the model's input channels (1, 3 or 4).
        max_pixels: the largest ``width * height`` accepted.
        max_side: the largest width or height accepted.
        bands: 1-based band numbers to use (TIFF only), in the model's channel order.
        rescale: a fixed ``(MIN, MAX)`` to map to 0..255 (None: the default rule).

    Returns:
        The oriented image as ``uint8``.

    Raises:
        ImageError: a subclass naming what is wrong (format, corrupt, too large, bands).
    """
    stream, owned = as_stream(source)
    try:
        head = stream.read(16)
        stream.seek(0)
        if sniff_format(head)[0] == "TIFF":
            return _decode_tiff(stream, in_channels, max_pixels, max_side, bands, rescale)
        if bands:
            raise UnsupportedFormatError("bands= applies to TIFF inputs only")
        image = open_image(stream, max_pixels=max_pixels, max_side=max_side)
        with image:
            return _model_pixels(image, in_channels, rescale)
    finally:
        if owned:
            stream.close()


def _decode_tiff(
    stream: BinaryIO, in_channels: int, max_pixels: int, max_side: int, bands, rescale
) -> np.ndarray:
    """Pillow for what it reads faithfully, :func:`service.bands.decode_raster` for the rest."""
    try:
        with Image.open(stream, formats=("TIFF",)) as header:
            raster = needs_raster_reader(header.tag_v2, bands)
            nodata_value = header.tag_v2.get(GDAL_NODATA)
    except Image.DecompressionBombError:
        raster, nodata_value = False, None  # open_image reports it in the service's words
    except Exception:  # a header Pillow cannot parse: GDAL may still read it
        logger.debug("Pillow cannot read this TIFF header", exc_info=True)
        raster, nodata_value = True, None
    stream.seek(0)
    if raster:
        data = stream.read()
        return decode_raster(
            data,
            in_channels=in_channels,
            max_pixels=max_pixels,
            max_side=max_side,
            bands=bands,
            rescale=rescale,
        )
    image = open_image(stream, max_pixels=max_pixels, max_side=max_side)
    with image:
        alpha = None
        if image.mode in ("RGBA", "LA") and in_channels != 4:
            alpha = np.asarray(image.getchannel("A")) == 0
        return _model_pixels(image, in_channels, rescale, alpha, _number(nodata_value))


def _model_pixels(
    image: Image.Image,
    in_channels: int,
    rescale: tuple[float, float] | None,
    alpha: np.ndarray | None = None,
    nodata_value: float | None = None,
) -> np.ndarray:
    """A loaded image -> ``(H, W, in_channels)`` uint8 by the bit-depth rule, nodata noted.

    A 16-bit or float grey image is rescaled as its one band, then repeated to the model's
    channels (an added alpha plane is opaque 255, not a band to stretch).
    """
    wide = image.mode.startswith("I") or image.mode == "F"
    raw = _raw_grey(image)[:, :, None] if wide else to_array(image, in_channels)
    nodata = [alpha] if alpha is not None else []
    if nodata_value is not None:
        nodata.append(np.all(raw == nodata_value, axis=-1))
    if np.issubdtype(raw.dtype, np.floating):
        nodata.append(~np.isfinite(raw).all(axis=-1))
    missing = np.logical_or.reduce(nodata) if nodata else None
    note_nodata(missing)
    pixels = rescale_pixels(raw, rescale, missing)
    return _grey_to_channels(pixels[:, :, 0], in_channels) if wide else pixels


def _raw_grey(image: Image.Image) -> np.ndarray:
    """A 16-bit grey image as ``uint16``, a float one as its raw ``float32`` values."""
    if image.mode == "F":
        return _as_numpy(image).astype(np.float32, copy=False)
    return _wide_grey(image)


def _number(text) -> float | None:
    """GDAL's nodata tag (an ASCII number) as a float, or None."""
    try:
        return float(str(text).strip("\x00 ")) if text is not None else None
    except ValueError:
        return None
