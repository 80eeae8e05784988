"""Vectors from a class-index raster of any size: polygons per class, merged across blocks.

:func:`write_vectors` reads a class-index GeoTIFF/COG (``uint8``, nodata 255) block by block,
polygonizes each block with GDAL (``rasterio.features.shapes``, 4-connected) and writes one
feature per polygon with pyogrio: GeoPackage by default, FlatGeobuf or GeoJSON on request.

Why it stays in bounded memory, and why the seams do not show:

* **Blocks.** Only one window of ``block_size`` x ``block_size`` pixels is in memory at a time.
  A polygon that does not reach an inner block edge is final: it is written at once (in
  batches).
* **Seams.** A polygon that reaches an inner block edge may be a piece of a larger one. Pieces
  are kept per class, in *pixel* coordinates (integers: the pieces' shared edges coincide
  exactly, where map coordinates would differ in the last bits and leave slivers), and
  unioned after each row of blocks (``shapely.unary_union``, then ``make_valid``): merged
  polygons that end above the next row are final and written, the others wait for it. The
  result has as many polygons as an unblocked polygonization, and the same area; what waits
  is about one row of blocks' seam pieces (plus any polygon still growing downwards), so
  memory follows the raster's width, not its area.
* **Map units.** Pixel coordinates go through the raster's affine transform, then are
  simplified with ``tolerance_m`` in map units (``preserve_topology``; 0 keeps the exact
  pixel outlines). Each feature's ``area`` is measured there, in the raster CRS's units
  squared (m^2 for UTM), before any reprojection.
* **CRS.** ``crs="wgs84"`` (default) reprojects to longitude/latitude (pyproj), which RFC 7946
  requires of GeoJSON; ``crs="native"`` keeps the raster's CRS, written so GDAL reads it back
  (GeoPackage/FlatGeobuf store the WKT; GDAL's GeoJSON writer the named CRS object).

Simplifying each polygon on its own can open hairline gaps or overlaps between neighbours
(the polygons are not a shared-edge topology); use ``tolerance_m=0`` where that matters.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import GeoInputError
from service.geo.crs import check_crs_choice, require

# GDAL driver -> file suffix, for the formats write_vectors offers (GeoPackage is the default).
DRIVERS: dict[str, str] = {"GPKG": ".gpkg", "FlatGeobuf": ".fgb", "GeoJSON": ".geojson"}
DEFAULT_DRIVER = "GPKG"
DEFAULT_BLOCK = 2048
NODATA = 255
GDAL_CACHE_MB = 64
# Finished polygons written per pyogrio call (a GeoPackage is appended to batch by batch).
_BATCH = 2_000
_APPENDABLE = frozenset({"GPKG"})


@dataclass
class VectorSummary:
    """What :func:`write_vectors` wrote.

    Attributes:
        path: the vector file.
        driver: its GDAL driver.
        crs: the CRS written (``"EPSG:4326"`` for WGS 84, else the raster's, as WKT or EPSG).
        features: polygons written.
        area: per class index, the total polygon area in the raster CRS's units squared.
        blocks: windows read.
        seam_pieces: polygons that reached an inner block edge and were merged.
    """

    path: Path
    driver: str
    crs: str | None
    features: int = 0
    area: dict[int, float] = field(default_factory=dict)
    blocks: int = 0
    seam_pieces: int = 0


def check_driver(driver: str) -> str:
    """The GDAL driver name for ``driver`` (case-insensitive), or ``ValueError`` naming them."""
    for name in DRIVERS:
        if driver.lower() == name.lower():
            return name
    raise ValueError(f"vector driver must be one of {', '.join(DRIVERS)}, got {driver!r}")


@dataclass(frozen=True)
class VectorOptions:
    """The vectors a raster run asks for (``fcn predict --vectors``, a job's ``vectors``).

    Attributes:
        driver: ``"GPKG"``, ``"FlatGeobuf"`` or ``"GeoJSON"``.
        tolerance_m: simplification in map units (0: the exact pixel outlines).
        crs: ``"wgs84"`` or ``"native"``; None: WGS 84 for GeoJSON (RFC 7946), else native.
    """

    driver: str = DEFAULT_DRIVER
    tolerance_m: float = 0.0
    crs: str | None = None

    @property
    def resolved_crs(self) -> str:
        if self.crs is not None:
            return self.crs
        return "wgs84" if check_driver(self.driver) == "GeoJSON" else "native"

    def path(self, stem: Path) -> Path:
        """``STEM_mask.gpkg`` (``.fgb``, ``.geojson``) beside ``STEM_mask.tif``."""
        return stem.with_name(stem.name + "_mask" + DRIVERS[check_driver(self.driver)])


def write_mask_vectors(
    mask_path: str | os.PathLike, stem: Path, options: VectorOptions, classes: Sequence[str]
) -> VectorSummary:
    """The vectors step of a raster run (``fcn predict --vectors``, jobs): polygonize its
    finished mask as ``options`` say, then list the file in the run's STAC Item."""
    from service.geo.stac import add_vectors_asset, stac_path

    summary = write_vectors(
        mask_path,
        options.path(stem),
        classes=classes,
        tolerance_m=options.tolerance_m,
        driver=options.driver,
        crs=options.resolved_crs,
    )
    if stac_path(stem).exists():
        add_vectors_asset(stem, options.path(stem))
    return summary


def _row_windows(width: int, row: int, height: int, block: int):
    """``(col, row, w, h)`` of every block of one block row."""
    for col in range(0, width, block):
        yield col, row, min(block, width - col), min(block, height - row)


def _touches_inner_edge(bounds: tuple[float, ...], window: tuple[int, int, int, int], size) -> bool:
    """Whether pixel ``bounds`` reach an edge of ``window`` that is not the raster's edge."""
    col, row, w, h = window
    width, height = size
    x0, y0, x1, y1 = bounds
    return (
        (x0 <= col and col > 0)
        or (y0 <= row and row > 0)
        or (x1 >= col + w and col + w < width)
        or (y1 >= row + h and row + h < height)
    )


def _pixel_polygons(src, block: int, nodata: int, summary: VectorSummary):
    """Yield ``(class, polygon in pixel coordinates)``: polygons inside a block as found, and
    after each block row the merged seam pieces that cannot reach the rows below."""
    size = (src.width, src.height)
    pending: dict[int, list] = defaultdict(list)
    for row in range(0, src.height, block):
        for window in _row_windows(src.width, row, src.height, block):
            yield from _block_polygons(src, window, size, nodata, pending, summary)
        yield from _settle(pending, min(row + block, src.height), src.height)


def _block_polygons(src, window, size, nodata: int, pending: dict[int, list], summary):
    """Polygonize one block: yield the finished polygons, add seam pieces to ``pending``."""
    features = require("rasterio.features")
    from affine import Affine
    from shapely.geometry import shape

    col, row, w, h = window
    data = src.read(1, window=((row, row + h), (col, col + w)))
    summary.blocks += 1
    valid = data != nodata
    if not valid.any():
        return
    offset = Affine.translation(col, row)
    for geometry, value in features.shapes(data, mask=valid, connectivity=4, transform=offset):
        polygon = shape(geometry)
        if _touches_inner_edge(polygon.bounds, window, size):
            pending[int(value)].append(polygon)
            summary.seam_pieces += 1
        else:
            yield int(value), polygon


def _settle(pending: dict[int, list], row_end: int, height: int):
    """Union each class's pending pieces; yield the polygons that end above ``row_end`` (no
    later block can join them) and keep the rest. Memory: about one block row's seams."""
    shapely = require("shapely")
    for value in sorted(pending):
        merged = shapely.make_valid(shapely.unary_union(pending[value]))
        keep = []
        for part in _polygons_of(merged):
            if row_end < height and part.bounds[3] >= row_end:
                keep.append(part)
            else:
                yield value, part
        pending[value] = keep


def _polygons_of(geometry) -> Iterator[Any]:
    """The polygons of any geometry (make_valid may return collections with lines)."""
    kind = geometry.geom_type
    if kind == "Polygon":
        if not geometry.is_empty:
            yield geometry
    elif kind in ("MultiPolygon", "GeometryCollection"):
        for part in geometry.geoms:
            yield from _polygons_of(part)


def _reprojector(crs: str, src_crs):
    """``None`` (keep map coordinates) or a shapely-coordinate function to WGS 84."""
    if crs == "native":
        return None
    if src_crs is None:
        raise GeoInputError(
            "the raster has no CRS, so its vectors cannot be reprojected to WGS 84; "
            "ask crs='native' or assign one (gdal_edit.py -a_srs EPSG:<code>)"
        )
    pyproj = require("pyproj")
    transformer = pyproj.Transformer.from_crs(src_crs.to_wkt(), "EPSG:4326", always_xy=True)

    def apply(coords: np.ndarray) -> np.ndarray:
        lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
        return np.stack([lon, lat], axis=1)

    return apply


def _written_crs(crs: str, src_crs) -> str | None:
    if crs == "wgs84":
        return "EPSG:4326"
    if src_crs is None:
        return None
    epsg = src_crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else src_crs.to_wkt()


class _Sink:
    """Features in batches -> pyogrio (appended for a GeoPackage, else one write at the end)."""

    def __init__(self, path: Path, driver: str, crs: str | None, wgs84: bool) -> None:
        self.pyogrio = require("pyogrio")
        self.path, self.driver, self.crs = path, driver, crs
        self.layer_options = {"RFC7946": "YES"} if driver == "GeoJSON" and wgs84 else None
        self.rows: list[tuple[bytes, int, str, float]] = []
        self.written = 0

    def add(self, wkb: bytes, index: int, name: str, area: float) -> None:
        self.rows.append((wkb, index, name, area))
        if self.driver in _APPENDABLE and len(self.rows) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.written:
            return
        wkb, index, name, area = zip(*self.rows, strict=True) if self.rows else ((), (), (), ())
        self.pyogrio.raw.write(
            self.path,
            np.array(wkb, dtype=object),
            [np.array(index, np.int32), np.array(name, dtype=object), np.array(area, np.float64)],
            ["class_index", "class_name", "area"],
            layer=self.path.stem,
            driver=self.driver,
            geometry_type="Polygon",
            crs=self.crs,
            append=self.written > 0,
            layer_options=self.layer_options,
        )
        self.written += len(self.rows)
        self.rows = []


def write_vectors(
    mask_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    classes: Sequence[str],
    tolerance_m: float = 0.0,
    driver: str = DEFAULT_DRIVER,
    crs: str = "wgs84",
    block_size: int = DEFAULT_BLOCK,
) -> VectorSummary:
    """Polygonize a class-index raster into a vector file, block by block (module docstring).

    The raster pipeline calls this after writing its COG mask.

    Args:
        mask_path: a single-band class-index raster GDAL reads (GeoTIFF/COG); its nodata
            (255 when unset) is left out.
        out_path: the vector file to write (replaced if it exists).
        classes: class names in index order (attribute ``class_name``).
        tolerance_m: simplification tolerance in map units (metres for UTM); 0 = exact.
        driver: ``"GPKG"`` (default), ``"FlatGeobuf"`` or ``"GeoJSON"``.
        crs: ``"wgs84"`` (longitude/latitude, RFC 7946) or ``"native"`` (the raster's CRS).
        block_size: pixels per block side (memory: one block plus the seam pieces).

    Returns:
        A :class:`VectorSummary`; each feature has ``class_index``, ``class_name`` and
        ``area`` (map units squared, in the raster's CRS).

    Raises:
        ValueError: a bad driver, crs, tolerance or block size.
        GeoInputError: WGS 84 asked of a raster without CRS; :class:`GeoDependencyError` when the
            geo extra is not installed.
    """
    driver = check_driver(driver)
    check_crs_choice(crs)
    if not (tolerance_m >= 0.0 and np.isfinite(tolerance_m)):
        raise ValueError(f"tolerance_m must be a finite number >= 0, got {tolerance_m}")
    if block_size < 16:
        raise ValueError(f"block_size must be at least 16 pixels, got {block_size}")
    rasterio = require("rasterio")
    shapely = require("shapely")
    out = Path(out_path)
    if out.exists():
        out.unlink()
    # GDAL's block cache defaults to 5% of RAM: on a big raster it, not the blocks, would set
    # the peak; each block is read once, so a small cache loses nothing.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(mask_path) as src:
        if src.count != 1:
            raise GeoInputError(
                f"{mask_path}: a class mask has 1 band, this raster has {src.count}"
            )
        nodata = NODATA if src.nodata is None else int(src.nodata)
        t = src.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        project = _reprojector(crs, src.crs)
        summary = VectorSummary(out, driver, _written_crs(crs, src.crs))
        sink = _Sink(out, driver, summary.crs, crs == "wgs84")
        area: dict[int, float] = defaultdict(float)
        for value, polygon in _pixel_polygons(src, block_size, nodata, summary):
            mapped = shapely.affinity.affine_transform(polygon, matrix)
            if tolerance_m > 0:
                mapped = mapped.simplify(tolerance_m, preserve_topology=True)
            if not mapped.is_valid:
                mapped = shapely.make_valid(mapped)
            name = classes[value] if value < len(classes) else f"class_{value}"
            for part in _polygons_of(mapped):
                part_area = part.area  # in the raster's map units, before any reprojection
                area[value] += part_area
                if project is not None:
                    part = shapely.transform(part, project)
                sink.add(part.wkb, value, name, part_area)
        sink.flush()
    summary.features = sink.written
    summary.area = dict(sorted(area.items()))
    return summary
