"""Open a GDAL raster and read it by windows as the model's 8-bit channels plus a validity mask.

The rules (docs/gis.md says them to users):

* **Bands**: ``bands`` (``--bands 3,2,1``, 1-based, in the model's channel order) picks them.
  Without it the raster's bands other than alpha must number exactly the model's
  ``in_channels``; more or fewer is a :class:`GeoInputError` naming ``--bands`` — a band is
  never dropped silently.
* **Bit depth**: the rule of :mod:`service.rescale`, the same as on HTTP: 8-bit data as is;
  a fixed ``rescale=(lo, hi)`` (``--rescale MIN,MAX``) for every band; otherwise each band's
  2nd..98th percentile of its valid pixels in a decimated read (:func:`gdal_sample`, at most
  :data:`service.rescale.SAMPLE_SIDE` a side, from overviews when the file has them), so the
  raster is never read whole.
* **Validity**: with an alpha band or an internal mask, a pixel is valid where GDAL's mask is
  non-zero; with a nodata value, a pixel is nodata where *every* selected band equals it (a dark
  pixel with one zero channel stays a pixel); NaN is always nodata. Invalid pixels get the
  output nodata, never a class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from service.errors import GeoInputError, UnsupportedFormatError
from service.geo import require_rasterio
from service.rescale import RescaleError, Scaling, sample_shape
from service.rescale import choose_scaling as choose_rule


@dataclass
class GeoRaster:
    """An open raster, its chosen bands and rules. Use as a context manager.

    Attributes:
        path: the file.
        indexes: the 1-based bands read, in model channel order.
        scaling: the 8-bit rule.
        width, height, crs, transform, nodata, descriptions: as GDAL reports them.
    """

    path: str
    indexes: tuple[int, ...]
    scaling: Scaling
    dataset: object = field(repr=False)

    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def height(self) -> int:
        return self.dataset.height

    @property
    def crs(self):
        return self.dataset.crs

    @property
    def transform(self):
        return self.dataset.transform

    @property
    def descriptions(self) -> tuple[str | None, ...]:
        return tuple(self.dataset.descriptions[i - 1] for i in self.indexes)

    @property
    def profile(self) -> dict:
        """Size and georeference, what the partial and output rasters are created with."""
        return {
            "width": self.width,
            "height": self.height,
            "crs": self.crs,
            "transform": self.transform,
        }

    @property
    def scaling_note(self) -> str:
        """The bit-depth rule applied, in one line (the COGs' ``RESCALE`` tag)."""
        return self.scaling.describe(self.dataset.dtypes[self.indexes[0] - 1])

    @property
    def pixel_km2(self) -> float | None:
        """Ground area of one pixel in km^2 (None when the CRS has no linear unit)."""
        crs = self.crs
        if crs is None or not crs.is_projected:
            return None
        t = self.transform
        metres = crs.linear_units_factor[1]
        return abs(t.a * t.e - t.b * t.d) * metres * metres / 1e6

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """One window: ``(h, w, C)`` uint8 pixels and an ``(h, w)`` bool validity mask."""
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        data = self.dataset.read(list(self.indexes), window=window)
        valid = self._valid(data, window)
        pixels = self.scaling.apply(data)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0)), valid

    def _valid(self, data: np.ndarray, window) -> np.ndarray:
        return valid_mask(self.dataset, self.indexes, data, window=window)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> GeoRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_raster(
    path: str | os.PathLike,
    in_channels: int,
    *,
    bands: tuple[int, ...] | None = None,
    rescale: tuple[float, float] | None = None,
) -> GeoRaster:
    """Open ``path`` for windowed reads with the rules of the module docstring.

    Raises:
        GeoDependencyError: rasterio is not installed.
        GeoInputError: GDAL cannot open it, or its bands do not fit the model.
    """
    rasterio = require_rasterio()
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise GeoInputError(f"{path}: GDAL cannot open it as a raster ({exc})") from None
    try:
        indexes = choose_bands(dataset, in_channels, bands)
        scaling = choose_scaling(dataset, indexes, rescale)
    except Exception:
        dataset.close()
        raise
    return GeoRaster(str(path), indexes, scaling, dataset)


def choose_bands(dataset, in_channels: int, bands: tuple[int, ...] | None) -> tuple[int, ...]:
    """The 1-based bands to read, in model channel order (see the module docstring)."""
    from rasterio.enums import ColorInterp

    count = dataset.count
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise GeoInputError(f"--bands {bad} out of range: the raster has bands 1..{count}")
        if len(bands) != in_channels:
            raise GeoInputError(
                f"--bands names {len(bands)} bands but the model takes {in_channels} channels"
            )
        return tuple(bands)
    data = [i + 1 for i, c in enumerate(dataset.colorinterp) if c != ColorInterp.alpha]
    if len(data) == in_channels:
        return tuple(data)
    names = ", ".join(
        f"{b}={dataset.descriptions[b - 1] or dataset.colorinterp[b - 1].name}" for b in data
    )
    example = ",".join(str(b) for b in data[:in_channels])
    raise GeoInputError(
        f"the raster has {len(data)} data bands ({names}) but the model takes {in_channels} "
        f"channels; choose them in the model's order with --bands (e.g. --bands {example})"
    )


def choose_scaling(
    dataset, indexes: tuple[int, ...], rescale: tuple[float, float] | None
) -> Scaling:
    """The 8-bit rule of :mod:`service.rescale`, sampled from a decimated read."""
    try:
        return choose_rule(
            [dataset.dtypes[i - 1] for i in indexes],
            len(indexes),
            rescale,
            lambda: gdal_sample(dataset, indexes),
        )
    except RescaleError as exc:
        raise GeoInputError(f"{dataset.name}: --rescale MIN,MAX: {exc}") from None


def gdal_sample(dataset, indexes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(C, h, w)`` values and ``(h, w)`` validity read at most SAMPLE_SIDE a side (nearest;
    GDAL serves it from overviews when the file has them): the percentiles' sample."""
    from rasterio.enums import Resampling

    shape = sample_shape(dataset.height, dataset.width)
    sample = dataset.read(
        list(indexes), out_shape=(len(indexes), *shape), resampling=Resampling.nearest
    )
    return sample, valid_mask(dataset, indexes, sample, out_shape=shape)


def valid_mask(dataset, indexes, data: np.ndarray, *, window=None, out_shape=None) -> np.ndarray:
    """``(h, w)`` bool: where ``data`` (read from ``window``/at ``out_shape``) is not nodata."""
    from rasterio.enums import MaskFlags

    flags = dataset.mask_flag_enums[indexes[0] - 1]
    if MaskFlags.nodata in flags and dataset.nodata is not None:
        nodata = np.asarray(dataset.nodata, dtype=data.dtype)
        valid = data[0] != nodata  # band by band: no (bands, h, w) temporary
        for band in data[1:]:
            valid |= band != nodata
    elif MaskFlags.all_valid in flags:
        valid = np.ones(data.shape[1:], dtype=bool)
    else:  # alpha band or internal/external mask: GDAL's dataset mask
        valid = dataset.read_masks(indexes[0], window=window, out_shape=out_shape) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= ~np.isnan(data).any(axis=0)
    return valid


def check_georaster(
    path: str | os.PathLike,
    in_channels: int,
    *,
    bands: tuple[int, ...] | None = None,
    rescale: tuple[float, float] | None = None,
    name: str | None = None,
) -> None:
    """Refuse before any work what a georeferenced run of ``path`` would refuse (the job API).

    Raises:
        UnsupportedFormatError: GDAL cannot read it as a raster.
        GeoInputError: it carries no georeference, or its bands/rescale do not fit the model.
        GeoDependencyError: rasterio is not installed.
    """
    rasterio = require_rasterio()
    name = name or str(path)
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise UnsupportedFormatError(
            f"{name} is not a raster GDAL can read; send a GeoTIFF (or another GDAL raster)"
        ) from None
    with dataset:
        if dataset.crs is None and dataset.transform.is_identity:
            raise GeoInputError(
                f"{name} is not georeferenced (no CRS and no geotransform); a job writes "
                "georeferenced outputs: segment a plain image with POST /v1/segment instead"
            )
    with open_raster(path, in_channels, bands=bands, rescale=rescale):
        pass
