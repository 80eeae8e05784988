"""GeoTIFFs for the geo tests, written by rasterio (real GDAL): Dubai photographs and masks
placed at 0.5 m/pixel in UTM zone 40N (EPSG:32640), or synthetic rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="rasterio (the geo extra)")
from affine import Affine  # noqa: E402

ORIGIN = (300_000.0, 2_790_000.0)  # UTM 40N, Dubai
PIXEL = 0.5
# A transverse Mercator GDAL has no EPSG code for: a user-defined CRS.
LOCAL_CRS = "+proj=tmerc +lat_0=0 +lon_0=55.3 +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m"


def transform(pixel: float = PIXEL) -> Affine:
    return Affine(pixel, 0.0, ORIGIN[0], 0.0, -pixel, ORIGIN[1])


def write_geotiff(
    path: Path,
    pixels: np.ndarray,
    crs: str | None = "EPSG:32640",
    *,
    photometric: str | None = "RGB",
    nodata: float | None = None,
    **profile,
) -> Path:
    """``(H, W, C)`` pixels as a GeoTIFF; ``crs=None`` writes :data:`LOCAL_CRS` (no EPSG code)."""
    height, width, count = pixels.shape
    options = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": pixels.dtype.name,
        "transform": transform(),
        "crs": crs if crs is not None else rasterio.crs.CRS.from_proj4(LOCAL_CRS),
        **profile,
    }
    if photometric is not None:
        options["photometric"] = photometric
    if nodata is not None:
        options["nodata"] = nodata
    with rasterio.open(path, "w", **options) as out:
        out.write(pixels.transpose(2, 0, 1))
    return path
