"""The ``geotiff`` output format: a class mask as a Cloud-Optimized GeoTIFF, in memory.

``uint8`` class indices with the input GeoTIFF's CRS and transform, nodata 255 (no class), a
colour table from the model's palette and the class names (band description and a
``CLASSES`` JSON tag), overviews resampled by nearest neighbour: what QGIS shows as a
classified map. Written by GDAL's COG driver through rasterio's ``MemoryFile`` (the ``geo``
extra). Inputs that are not georeferenced are refused rather than written without a place:
a mask with no CRS is a PNG, which ``format=index`` already gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from service.bands import NO_CLASS
from service.errors import GeoInputError
from service.geo.crs import epsg_code, require
from service.georef import GeoReference

NOT_GEOREFERENCED = (
    "format=geotiff needs a georeferenced GeoTIFF input (geo tags placing it on the map); "
    "this input has none: use format=index for a class-index PNG"
)


def mask_cog(
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    classes: Sequence[str],
    georef: GeoReference | None,
) -> bytes:
    """The mask as COG bytes (module docstring).

    Raises:
        GeoInputError: no georeference, or a CRS without EPSG code; GeoDependencyError without
            rasterio.
        ValueError: more than 255 classes (uint8 with 255 as nodata).
    """
    if georef is None:
        raise GeoInputError(NOT_GEOREFERENCED)
    code = epsg_code(georef.crs)
    if code is None:
        raise GeoInputError(
            "format=geotiff: the input GeoTIFF names no EPSG code (a user-defined CRS), which "
            "this service cannot carry over; assign one (gdal_edit.py -a_srs EPSG:<code>)"
        )
    if len(classes) > NO_CLASS:
        raise ValueError(
            f"format=geotiff holds up to {NO_CLASS} classes, the model has {len(classes)}"
        )
    rasterio = require("rasterio")
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as gdal_copy
    from rasterio.transform import Affine

    height, width = mask.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": rasterio.crs.CRS.from_epsg(code),
        "transform": Affine.from_gdal(*georef.transform),
        "nodata": NO_CLASS,
    }
    colours = {i: (*map(int, rgb), 255) for i, rgb in enumerate(palette)}
    with MemoryFile() as plain, MemoryFile() as cog:
        with plain.open(**profile) as dataset:
            dataset.write(mask.astype(np.uint8, copy=False), 1)
            dataset.write_colormap(1, colours)
            dataset.set_band_description(1, "class")
            dataset.update_tags(CLASSES=json.dumps(list(classes)))
        with plain.open() as dataset:
            gdal_copy(
                dataset,
                cog.name,
                driver="COG",
                COMPRESS="DEFLATE",
                OVERVIEW_RESAMPLING="NEAREST",
                BLOCKSIZE=512,
            )
        return cog.read()
