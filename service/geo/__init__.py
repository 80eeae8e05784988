"""Georeferenced rasters of any size: read by windows, segment tile by tile, write a COG.

Everything here needs the ``geo`` extra (rasterio, whose wheels ship GDAL, and rio-cogeo).
The rest of the service never imports this package at module level, so a serve-only install
still works; :func:`require_rasterio` turns a missing extra into a
:class:`service.errors.GeoDependencyError` that says what to install.

* :mod:`service.geo.inputs` opens a raster, picks and orders bands, declares the 8-bit rescale
  rule and reads windows with their validity mask (nodata, alpha, internal masks);
* :mod:`service.geo.grid` says where the windows lie: strips of tile rows, column panels;
* :mod:`service.geo.tiled` runs blended sliding windows a strip of a panel at a time;
* :mod:`service.geo.resume` keeps the partial outputs and the sidecar a killed run resumes from;
* :mod:`service.geo.cog` turns the partial rasters into Cloud-Optimized GeoTIFFs, and
  :mod:`service.geo.stac` describes them in a STAC Item;
* :mod:`service.geo.run` is the per-file driver behind ``fcn predict`` on GeoTIFFs;
* :mod:`service.geo.ray` splits one raster's tile rows across Ray workers, and
  :mod:`service.geo.ray_parts` keeps the plan and progress a killed Ray run resumes from;
* :mod:`service.geo.crs`, :mod:`service.geo.mask_tiff` and :mod:`service.geo.vectors`: GeoJSON
  coordinates as GIS tools read them, the ``geotiff`` output format, and GeoPackage /
  FlatGeobuf / GeoJSON vectors from a class raster of any size.
"""

from __future__ import annotations

from types import ModuleType

from service.errors import GeoDependencyError

INSTALL_HINT = "pip install 'fcnseg[geo]'"


def require_rasterio() -> ModuleType:
    """``import rasterio``, or a :class:`GeoDependencyError` naming the extra to install."""
    try:
        import rasterio
    except ImportError as exc:
        raise GeoDependencyError(
            f"georeferenced rasters need rasterio, which is not installed ({exc}); "
            f"install the geo extra: {INSTALL_HINT}"
        ) from None
    return rasterio
