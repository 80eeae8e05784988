"""Where a GeoTIFF lies on the map: its pixel -> map affine transform and CRS, read with Pillow.

A GeoTIFF places its raster with TIFF tags (OGC GeoTIFF 1.1): either a tie point plus pixel
scale (``ModelTiepointTag`` 33922, ``ModelPixelScaleTag`` 33550) or a full affine matrix
(``ModelTransformationTag`` 34264), and names its coordinate system in the GeoKey directory
(``GeoKeyDirectoryTag`` 34735: ``ProjectedCSTypeGeoKey`` or ``GeographicTypeGeoKey``, an EPSG
code). Pillow keeps those tags in ``tag_v2`` while reading only the header, so no GDAL, rasterio
or tifffile is needed to turn pixel outlines into map coordinates.

Pixel coordinates here are pixel corners (pixel ``(row, col)`` spans ``[col, col + 1] x [row,
row + 1]``). A file that declares ``RasterPixelIsPoint`` ties pixel *centres* to its points:
the transform is moved by half a pixel, as GDAL does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.imaging import Source, as_stream, sniff_format

logger = logging.getLogger(__name__)

MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
ORIENTATION = 274
# GeoKeys
RASTER_TYPE = 1025
RASTER_PIXEL_IS_POINT = 2
GEOGRAPHIC_TYPE = 2048
PROJECTED_CS_TYPE = 3072
USER_DEFINED = 32767


@dataclass(frozen=True)
class GeoReference:
    """A pixel -> map affine, in GDAL's order, and the map's CRS.

    Attributes:
        transform: ``(x0, x_per_col, x_per_row, y0, y_per_col, y_per_row)``:
            ``X = x0 + col * x_per_col + row * x_per_row``, likewise ``Y``.
        crs: ``"EPSG:<code>"`` when the file names one, else None.
    """

    transform: tuple[float, float, float, float, float, float]
    crs: str | None = None

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(n, 2)`` pixel ``(x, y)`` to ``(n, 2)`` map ``(X, Y)``."""
        x0, a, b, y0, d, e = self.transform
        x, y = points[:, 0], points[:, 1]
        return np.stack([x0 + a * x + b * y, y0 + d * x + e * y], axis=1)

    @property
    def flips(self) -> bool:
        """Whether the transform mirrors (north-up images do: Y falls as rows grow)."""
        _, a, b, _, d, e = self.transform
        return a * e - b * d < 0


def _geo_keys(directory: tuple[int, ...] | None) -> dict[int, int]:
    """Short-valued GeoKeys from a ``GeoKeyDirectoryTag`` (others are ignored)."""
    if not directory or len(directory) < 4:
        return {}
    keys = {}
    count = directory[3]
    for i in range(count):
        entry = directory[4 + 4 * i : 8 + 4 * i]
        if len(entry) == 4 and entry[1] == 0:  # location 0: the value is in the entry
            keys[int(entry[0])] = int(entry[3])
    return keys


def _transform(tags) -> tuple[float, float, float, float, float, float] | None:
    matrix = tags.get(MODEL_TRANSFORMATION)
    if matrix is not None and len(matrix) >= 8:
        m = [float(v) for v in matrix]
        return (m[3], m[0], m[1], m[7], m[4], m[5])
    tie, scale = tags.get(MODEL_TIEPOINT), tags.get(MODEL_PIXEL_SCALE)
    if tie is None or scale is None or len(tie) < 6 or len(scale) < 2:
        return None
    i, j, _, x, y, _ = (float(v) for v in tie[:6])
    sx, sy = float(scale[0]), float(scale[1])
    return (x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy)


def read_georeference(source: Source) -> GeoReference | None:
    """The georeference of a GeoTIFF, or None (not a TIFF, no geo tags, or unusable ones).

    Reads the header only. A TIFF with an EXIF orientation other than 1 is served rotated,
    so its tags no longer describe the pixels: None (with a log line) rather than wrong places.
    """
    stream, owned = as_stream(source)
    try:
        head = stream.read(16)
        stream.seek(0)
        if sniff_format(head)[0] != "TIFF":
            return None
        with Image.open(stream, formats=("TIFF",)) as image:
            tags = image.tag_v2
            transform = _transform(tags)
            if transform is None:
                return None
            if tags.get(ORIENTATION, 1) != 1:
                logger.info("GeoTIFF with EXIF orientation %s: geo tags ignored", tags[ORIENTATION])
                return None
            keys = _geo_keys(tags.get(GEO_KEY_DIRECTORY))
    except Exception:  # a broken header: decoding reports it; here it only means "no geo"
        logger.debug("no georeference read", exc_info=True)
        return None
    finally:
        if owned:
            stream.close()
    if not all(np.isfinite(transform)):
        return None
    if keys.get(RASTER_TYPE) == RASTER_PIXEL_IS_POINT:  # tie points at pixel centres
        x0, a, b, y0, d, e = transform
        transform = (x0 - 0.5 * (a + b), a, b, y0 - 0.5 * (d + e), d, e)
    code = keys.get(PROJECTED_CS_TYPE) or keys.get(GEOGRAPHIC_TYPE)
    crs = f"EPSG:{code}" if code and code != USER_DEFINED else None
    return GeoReference(transform, crs)
