"""Coordinate systems as GIS tools read them, and the optional ``geo`` libraries behind them.

Two rules for vectors (docs/gis-vectors.md):

* **RFC 7946 by default**: GeoJSON is WGS 84 longitude/latitude and carries no ``crs`` member;
  map coordinates are reprojected to it with pyproj.
* **Native on request** (``crs="native"``): coordinates stay in the raster's CRS, named the way
  GDAL/OGR reads it, the GeoJSON 2008 named-CRS object with an OGC URN
  (``{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32640"}}``). A bare
  ``"EPSG:32640"`` string is not read by GDAL, which then assumes WGS 84.

pyproj, rasterio and pyogrio come with the ``geo`` extra and are imported only when a geo
feature is used, so a serve-only install still starts; asking for one without them raises
:class:`service.errors.GeoDependencyError` naming ``pip install 'fcnseg[geo]'``; an input
whose georeference cannot give what was asked raises :class:`service.errors.GeoInputError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from service.errors import GeoDependencyError, GeoInputError

# The output CRS choices of every vector writer: RFC 7946 WGS 84, or the raster's own.
CRS_CHOICES: tuple[str, ...] = ("wgs84", "native")
DEFAULT_CRS = "wgs84"
INSTALL_HINT = "pip install 'fcnseg[geo]'"


def require(module: str) -> ModuleType:
    """Import one of the ``geo`` extra's libraries (``rasterio``, ``pyogrio``, ``pyproj``, ...).

    Raises:
        GeoDependencyError: it is not installed; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GeoDependencyError(
            f"this needs {module.split('.')[0]}, which is not installed; install the geo extra: "
            f"{INSTALL_HINT}"
        ) from None


def check_crs_choice(crs: str) -> str:
    """Return ``crs`` if it is one of :data:`CRS_CHOICES`, else raise ``ValueError``."""
    if crs not in CRS_CHOICES:
        raise ValueError(f"crs must be one of {', '.join(CRS_CHOICES)}, got {crs!r}")
    return crs


def epsg_code(crs: str | None) -> int | None:
    """``"EPSG:32640"`` -> 32640; None for None or anything else."""
    if crs and crs.upper().startswith("EPSG:") and crs[5:].isdigit():
        return int(crs[5:])
    return None


def named_crs(crs: str) -> dict[str, Any]:
    """The GeoJSON 2008 named-CRS member that GDAL/OGR reads (OGC URN form).

    Raises:
        GeoInputError: ``crs`` is not an ``EPSG:<code>``.
    """
    code = epsg_code(crs)
    if code is None:
        raise GeoInputError(f"cannot name the CRS {crs!r} for GIS tools: expected EPSG:<code>")
    return {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}"}}


def no_epsg_message(what: str) -> str:
    """Why a raster with a user-defined CRS (no EPSG code) cannot be reprojected."""
    return (
        f"{what} names no EPSG code (a user-defined or missing CRS), so its coordinates cannot "
        "be reprojected to WGS 84; ask crs=native (fcn predict: --crs native) for coordinates in "
        "its own map units, or "
        "assign an EPSG code to the raster (gdal_edit.py -a_srs EPSG:<code>)"
    )


def to_wgs84(crs: str | None, what: str = "the GeoTIFF") -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping ``(n, 2)`` map ``(x, y)`` in ``crs`` to ``(n, 2)`` ``(lon, lat)``.

    Raises:
        GeoInputError: ``crs`` has no EPSG code.
        GeoDependencyError: pyproj is not installed.
    """
    code = epsg_code(crs)
    if code is None:
        raise GeoInputError(no_epsg_message(what))
    pyproj = require("pyproj")
    if code == 4326:
        return lambda points: np.asarray(points, dtype=np.float64)
    transformer = pyproj.Transformer.from_crs(f"EPSG:{code}", "EPSG:4326", always_xy=True)

    def apply(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        lon, lat = transformer.transform(points[:, 0], points[:, 1])
        return np.stack([lon, lat], axis=1)

    return apply
