"""The bit-depth rule: how 12-bit, 16-bit and float pixels become the 0..255 a model takes.

One rule for every path that decodes pixels — ``/v1/segment`` and ``/v1/preview``
(:mod:`service.bands`, :mod:`service.imaging`), the image batch of ``fcn predict``, and the
raster path (:mod:`service.geo.inputs`) — so the same file gives the same mask on all of them:

* **8-bit data** are used as they are (what the model was trained on: its metadata's
  ``input_range``, 0..255; :data:`MODEL_INPUT_RANGE`).
* **A fixed range** ``(MIN, MAX)`` (``rescale=MIN,MAX`` on HTTP, ``--rescale MIN,MAX`` in the
  CLI) maps MIN..MAX linearly to 0..255 in every band, clipped; it applies to 8-bit data too.
* **Anything else** (12-bit in uint16, 16-bit, float, other integers) is mapped per band from
  its 2nd..98th percentile of the valid pixels of a *sample*: the raster read at most
  :data:`SAMPLE_SIDE` pixels a side (GDAL serves it from overviews when the file has them), never
  the whole raster — so a 12-bit file that uses a tenth of its container is not all water.

:class:`Scaling` is the chosen rule: it applies itself and says itself in one line
(:meth:`Scaling.describe`, what the ``X-Input-Warnings`` header, the JSON ``warnings`` and the
COG's ``RESCALE`` tag carry). Torch-free and rasterio-free: callers hand it their sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_SIDE = 1024
PERCENTILES = (2.0, 98.0)
# The pixel values every model this service serves was trained on (ModelMetadata.input_range).
MODEL_INPUT_RANGE = (0.0, 255.0)
AS_IS = "as is (8-bit)"
PERCENTILE_RULE = "percentile 2-98 (decimated)"

Range = tuple[float, float]


class RescaleError(ValueError):
    """A fixed range that cannot be applied, or nothing valid to take percentiles of."""


class NoValidPixels(RescaleError):
    """The sample has no valid pixel (all nodata, transparent or NaN) to take percentiles of."""


@dataclass(frozen=True)
class Scaling:
    """How raw values become 0..255: per-band ``(lo, hi)``, or None to use 8-bit data as is.

    Attributes:
        ranges: one ``(lo, hi)`` per band, in the order of the bands given to :meth:`apply`.
        rule: :data:`AS_IS`, ``"fixed MIN..MAX"`` or :data:`PERCENTILE_RULE`.
    """

    ranges: tuple[Range, ...] | None
    rule: str

    @property
    def as_is(self) -> bool:
        return self.ranges is None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` raw values -> ``(C, h, w)`` uint8 (NaN -> 0)."""
        if self.ranges is None:
            return data.astype(np.uint8, copy=False)
        out = np.empty(data.shape, dtype=np.uint8)
        for band, (lo, hi) in enumerate(self.ranges):
            span = hi - lo if hi > lo else 1.0
            scaled = (data[band].astype(np.float32) - np.float32(lo)) * np.float32(255.0 / span)
            np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 255.0, out=scaled)
            out[band] = np.rint(scaled)
        return out

    def apply_last(self, pixels: np.ndarray) -> np.ndarray:
        """The same for ``(h, w, C)`` pixels (the layout decoders return)."""
        if self.ranges is None:
            return pixels.astype(np.uint8, copy=False)
        return np.ascontiguousarray(self.apply(pixels.transpose(2, 0, 1)).transpose(1, 2, 0))

    def describe(self, dtype: str | np.dtype) -> str:
        """One line: the input's type, the rule and the ranges it used."""
        if self.ranges is None:
            return f"{np.dtype(dtype).name} input used as is (8-bit)"
        lo, hi = MODEL_INPUT_RANGE
        if self.rule.startswith("fixed"):
            how = f"rescale={_num(self.ranges[0][0])},{_num(self.ranges[0][1])}"
        else:
            bands = ", ".join(f"{_num(a)}..{_num(b)}" for a, b in self.ranges)
            how = f"each band's 2nd-98th percentile of a decimated sample ({bands})"
        return f"{np.dtype(dtype).name} input mapped to the model's {lo:g}..{hi:g} by {how}"


def _num(value: float) -> str:
    return f"{value:.6g}"


def parse_rescale(text: str | None) -> Range | None:
    """``"0,4095"`` -> ``(0.0, 4095.0)``; None or empty -> None.

    Raises:
        RescaleError: not two finite numbers MIN,MAX with MIN < MAX.
    """
    if text is None or not text.strip():
        return None
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise RescaleError(f"expected MIN,MAX like 0,4095, got {text!r}") from None
    return check_range((lo, hi))


def check_range(rescale: Sequence[float]) -> Range:
    """A fixed range as floats. Raises :class:`RescaleError` unless finite with MIN < MAX."""
    lo, hi = (float(v) for v in rescale)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise RescaleError(f"MIN and MAX must be finite numbers, got {lo:g},{hi:g}")
    if not hi > lo:
        raise RescaleError(f"MIN must be below MAX, got {lo:g},{hi:g}")
    return lo, hi


# sample() -> ((C, h, w) values, (h, w) bool valid); called only when percentiles are needed.
Sampler = Callable[[], tuple[np.ndarray, np.ndarray]]


def choose_scaling(dtypes: Sequence[str | np.dtype], bands: int, rescale, sample: Sampler):
    """The rule for data of ``dtypes`` (one per band read): fixed, as is, or percentiles.

    Raises:
        RescaleError: a bad fixed range, or no valid pixel in the sample.
    """
    if rescale is not None:
        lo, hi = check_range(rescale)
        return Scaling(tuple((lo, hi) for _ in range(bands)), f"fixed {lo:g}..{hi:g}")
    if all(np.dtype(d) == np.uint8 for d in dtypes):
        return Scaling(None, AS_IS)
    return Scaling(percentile_ranges(*sample()), PERCENTILE_RULE)


def percentile_ranges(sample: np.ndarray, valid: np.ndarray) -> tuple[Range, ...]:
    """Each band's 2nd..98th percentile over the valid, non-NaN values of ``(C, h, w)``."""
    ranges = []
    for band in sample:
        values = band[valid]
        if np.issubdtype(values.dtype, np.floating):
            values = values[np.isfinite(values)]
        if values.size == 0:
            raise NoValidPixels("no valid pixels to take percentiles of; give a fixed range")
        lo, hi = np.percentile(values, PERCENTILES)
        ranges.append((float(lo), float(hi)))
    return tuple(ranges)


def sample_shape(height: int, width: int) -> tuple[int, int]:
    """The decimated ``(h, w)`` the percentiles are taken from: at most SAMPLE_SIDE a side."""
    scale = max(1.0, max(width, height) / SAMPLE_SIDE)
    return max(1, round(height / scale)), max(1, round(width / scale))


def decimate(pixels: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """An in-memory ``(H, W, C)`` image's sample, by nearest pixel: ``((C, h, w), (h, w))``.

    For images decoded whole (Pillow); rasters read through GDAL sample with GDAL instead
    (:func:`service.geo.inputs.gdal_sample`). Both take every pixel up to SAMPLE_SIDE a side.
    """
    height, width = pixels.shape[:2]
    h, w = sample_shape(height, width)
    rows = ((np.arange(h) + 0.5) * (height / h)).astype(np.intp)
    cols = ((np.arange(w) + 0.5) * (width / w)).astype(np.intp)
    sample = pixels[rows[:, None], cols[None, :]].transpose(2, 0, 1)
    ok = np.ones((h, w), bool) if valid is None else valid[rows[:, None], cols[None, :]]
    return sample, ok
