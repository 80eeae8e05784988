"""Decode training images and masks, and map raw mask values to class indices.

Images go through the serving side's decoder (``service.imaging``) so that a model sees the
same pixels in training and in production: EXIF orientation, palette and mode conversions,
16-bit kept as ``uint16`` (scaled by 1/65535 at normalisation). Masks are read as raw
single-channel values (palette PNGs give their indices, never RGB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from service.imaging import open_image, to_array
from training.config import OptionError

# Training files are trusted and may be large scans: only refuse absurd sizes.
_MAX_SIDE = 1 << 16
_MAX_PIXELS = 1 << 31
_EXIF_ORIENTATION = 0x0112
_ONE_CHANNEL = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_FOUR_CHANNELS = {"RGBA", "RGBa", "PA"}
_MASK_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}


def mode_channels(mode: str) -> int:
    """The channel count a PIL mode trains as: 1 (grey, incl. 16-bit), 3 (RGB) or 4 (RGBA)."""
    if mode in _ONE_CHANNEL:
        return 1
    return 4 if mode in _FOUR_CHANNELS else 3


def read_header(path: Path) -> tuple[tuple[int, int], str]:
    """Return ``((height, width), mode)`` from the file header, after EXIF orientation."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as exc:  # Pillow raises many types for unreadable files
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if orientation in (5, 6, 7, 8):  # the transposing orientations swap the sides
        width, height = height, width
    return (height, width), mode


def read_image(path: Path, channels: int) -> np.ndarray:
    """Decode an image to ``(H, W, channels)`` ``uint8`` or ``uint16`` (16-bit sources)."""
    try:
        image = open_image(path, max_pixels=_MAX_PIXELS, max_side=_MAX_SIDE)
    except ValueError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    with image:
        array = to_array(image, channels)
    if array.dtype == np.float32:  # mode F: already [0, 1]; keep as is
        return array
    return np.ascontiguousarray(array)


def read_mask(path: Path) -> np.ndarray:
    """Decode a single-channel mask to its raw ``(H, W)`` values (``uint8`` or ``uint16``).

    Raises:
        ValueError: the mask is a colour image or holds values outside 0..65535.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in _MASK_MODES:
                raise ValueError(
                    f"mask {path} is a {mode} image; masks must be single-channel class "
                    "values (grayscale or palette PNG), not colours"
                )
            if mode == "1":
                image = image.convert("L")  # bilevel reads as bool; viewers show 0/255
            array = np.asarray(image)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read mask {path}: {exc}") from exc
    if array.dtype == np.uint8:
        return array
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise ValueError(f"mask {path} holds values outside 0..65535")
    return array.astype(np.uint16)


def present_values(mask: np.ndarray) -> np.ndarray:
    """The distinct values in a raw mask, sorted (fast for 8/16-bit masks)."""
    return np.flatnonzero(np.bincount(mask.ravel()))


class MaskMapper:
    """Turn raw mask values into class indices and refuse values nobody declared.

    With ``mask_values`` the i-th value becomes class ``i``; without, values must already be
    class indices ``< num_classes``. ``ignore_index`` passes through unchanged either way.
    """

    def __init__(
        self, num_classes: int, mask_values: Sequence[int] | None, ignore_index: int
    ) -> None:
        self.num_classes = num_classes
        self.mask_values = None if mask_values is None else [int(v) for v in mask_values]
        self.ignore_index = ignore_index
        fits_uint8 = num_classes <= 255 and 0 <= ignore_index <= 255
        self.dtype = np.uint8 if fits_uint8 else np.int32
        self._valid = np.zeros(65536, dtype=bool)
        self._lut = np.zeros(65536, dtype=self.dtype)
        if 0 <= ignore_index < 65536:
            self._valid[ignore_index] = True
            self._lut[ignore_index] = ignore_index
        sources = self.mask_values if self.mask_values is not None else range(num_classes)
        for index, value in enumerate(sources):
            self._valid[value] = True
            self._lut[value] = index
        # Plain class-index masks need no lookup, only the check.
        self._identity = self.mask_values is None and self.dtype == np.uint8

    def __call__(self, raw: np.ndarray, path: Path | str = "mask") -> np.ndarray:
        """Map one raw mask; ``path`` only names the file in errors."""
        values = present_values(raw)
        bad = values[~self._valid[values]]
        if bad.size:
            raise OptionError(
                f"mask {path} contains undeclared values {bad[:12].tolist()}: " + self._hint(),
                options=("mask_values",)
                if self.mask_values is not None
                else ("mask_values", "num_classes"),
            )
        if self._identity and raw.dtype == np.uint8:
            return raw
        return self._lut[raw]

    def _hint(self) -> str:
        if self.mask_values is not None:
            return (
                f"declared mask_values are {self.mask_values} and ignore_index is "
                f"{self.ignore_index}; list every value that occurs in mask_values"
            )
        return (
            f"class indices must be < num_classes ({self.num_classes}) or equal ignore_index "
            f"({self.ignore_index}); for encoded masks declare the values, e.g. "
            "mask_values 0,255 for binary masks"
        )
