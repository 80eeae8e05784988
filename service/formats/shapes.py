"""Vector outputs of a mask: COCO RLE, polygons and GeoJSON, per class present.

Each function returns a JSON-able dict; :mod:`service.formats.registry` registers them as output formats
and adds the caller's fields (model name, timings, source). docs/formats.md describes the
shapes and how to decode them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from service.bands import NO_CLASS
from service.formats.coco_rle import class_counts, counts_to_string, label_runs
from service.formats.polygons import Rings, label_polygons
from service.geo.crs import DEFAULT_CRS, check_crs_choice, named_crs, no_epsg_message, to_wgs84
from service.georef import GeoReference

# Douglas-Peucker tolerance in pixels for polygons and GeoJSON: the one default that the HTTP
# query, the CLI and the encoders share (docs/formats.md: why not 1 px).
DEFAULT_TOLERANCE = 0.5
MAX_TOLERANCE = 100.0


def present_classes(mask: np.ndarray, classes: Sequence[str]) -> Iterator[tuple[int, str, int]]:
    """``(index, name, pixels)`` of every class with at least one pixel, in class order.

    255 marks pixels with no data (:data:`service.bands.NO_CLASS`) when the model has fewer
    classes: it is no class, and gets no entry.
    """
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    if len(classes) <= NO_CLASS < len(counts):
        counts[NO_CLASS] = 0
    for index in np.flatnonzero(counts).tolist():
        name = classes[index] if index < len(classes) else f"class_{index}"
        yield index, name, int(counts[index])


def _bbox(starts: np.ndarray, lengths: np.ndarray, height: int) -> list[int]:
    """``[x, y, w, h]`` of column-major runs (a run may wrap to the next column)."""
    last = starts + lengths - 1
    cols_first, cols_last = starts // height, last // height
    wraps = cols_last > cols_first
    top = np.where(wraps, 0, starts % height).min()
    bottom = np.where(wraps, height - 1, last % height).max()
    x0, x1 = int(cols_first.min()), int(cols_last.max())
    return [x0, int(top), x1 - x0 + 1, int(bottom - top + 1)]


def coco_rle(mask: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """One COCO annotation per class present, its mask in compressed RLE.

    Returns:
        ``{"height", "width", "categories": [{"id", "name"}], "annotations": [{"category_id",
        "category", "area", "bbox", "segmentation": {"size": [h, w], "counts"}}]}``; category
        ids are the class indices.
    """
    height, width = mask.shape
    starts, lengths, labels = label_runs(mask)
    annotations = []
    for index, name, pixels in present_classes(mask, classes):
        chosen = labels == index
        counts = class_counts(starts, lengths, labels, index, mask.size)
        annotations.append(
            {
                "category_id": index,
                "category": name,
                "area": pixels,
                "bbox": _bbox(starts[chosen], lengths[chosen], height),
                "segmentation": {"size": [height, width], "counts": counts_to_string(counts)},
            }
        )
    return {
        "height": height,
        "width": width,
        "categories": [{"id": i, "name": n} for i, n in enumerate(classes)],
        "annotations": annotations,
    }


def _nested(
    rings: Rings, georef: GeoReference | None = None, project: Callable | None = None
) -> list[list[list[list[float]]]]:
    """Rings -> ``[[outer, hole, ...], ...]`` of ``[x, y]`` lists.

    Pixel coordinates, or map ones when ``georef`` is given, then passed through ``project``
    (map -> WGS 84 longitude/latitude) when that is given too.
    """
    if georef is None:
        polygons = rings.polygons()
    else:  # a mirroring transform would turn outer rings clockwise: reverse them back
        points = georef.apply(rings.points)
        if project is not None and len(points):
            points = project(points)
        polygons = rings.polygons(points, reverse=georef.flips)
    return [[ring.tolist() for ring in polygon] for polygon in polygons]


def class_polygons(
    mask: np.ndarray, classes: Sequence[str], tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Polygons per class present, in pixel coordinates (pixel corners, y down).

    Returns:
        ``{"height", "width", "tolerance", "classes": [{"index", "name", "pixels",
        "polygons": [[outer ring, hole, ...], ...]}]}``; a ring is a closed list of ``[x, y]``.
    """
    check_tolerance(tolerance)
    present = list(present_classes(mask, classes))
    outlines = label_polygons(mask, [index for index, _, _ in present], tolerance)
    return {
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "tolerance": tolerance,
        "classes": [
            {"index": index, "name": name, "pixels": pixels, "polygons": _nested(rings)}
            for (index, name, pixels), (_, rings) in zip(present, outlines, strict=True)
        ],
    }


def geojson(
    mask: np.ndarray,
    classes: Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
    georef: GeoReference | None = None,
    crs: str = DEFAULT_CRS,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: one MultiPolygon feature per class present.

    Coordinates are pixel ones (x right, y down) unless ``georef`` places the image on the map.
    Then ``crs="wgs84"`` (the default, RFC 7946) reprojects them to longitude/latitude and
    writes no ``crs`` member; ``crs="native"`` keeps the GeoTIFF's map coordinates and names
    its CRS as GDAL reads it (:func:`service.geo.crs.named_crs`).

    Raises:
        ValueError: a bad tolerance or ``crs`` choice.
        GeoInputError: WGS 84 asked for a GeoTIFF without an EPSG code.
        GeoDependencyError: WGS 84 asked without pyproj (the ``geo`` extra).
    """
    check_tolerance(tolerance)
    check_crs_choice(crs)
    project = None
    if georef is not None and crs == "wgs84":
        project = to_wgs84(georef.crs)
    present = list(present_classes(mask, classes))
    outlines = label_polygons(mask, [index for index, _, _ in present], tolerance)
    features = [
        {
            "type": "Feature",
            "id": index,
            "properties": {"index": index, "name": name, "pixels": pixels},
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": _nested(rings, georef, project),
            },
        }
        for (index, name, pixels), (_, rings) in zip(present, outlines, strict=True)
    ]
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if georef is not None:
        _describe_map(collection, georef, crs)
    collection.update(
        {
            "height": int(mask.shape[0]),
            "width": int(mask.shape[1]),
            "tolerance": tolerance,
            "coordinates": "pixel" if georef is None else _coordinates(crs),
            "features": features,
        }
    )
    return collection


def _coordinates(crs: str) -> str:
    return "lonlat" if crs == "wgs84" else "map"


def _describe_map(collection: dict[str, Any], georef: GeoReference, crs: str) -> None:
    """Foreign members naming where the pixels lie; ``crs`` only in native coordinates."""
    if crs == "native":
        if georef.crs is None:  # no EPSG code: the coordinates are in unnamed map units
            collection["crs_warning"] = no_epsg_message("the GeoTIFF")
        else:
            collection["crs"] = named_crs(georef.crs)
    collection["source_crs"] = georef.crs
    collection["transform"] = list(georef.transform)


def check_tolerance(tolerance: float) -> None:
    """Raise ``ValueError`` unless ``0 <= tolerance <= MAX_TOLERANCE``."""
    if not 0.0 <= tolerance <= MAX_TOLERANCE:
        raise ValueError(f"tolerance must be in [0, {MAX_TOLERANCE:g}] pixels, got {tolerance}")
