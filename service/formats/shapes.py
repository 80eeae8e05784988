"""Vector outputs of a mask: COCO RLE, polygons and GeoJSON, per class present.

Each function returns a JSON-able dict; :mod:`service.formats.registry` registers them as output formats
and adds the caller's fields (model name, timings, source). docs/formats.md describes the
shapes and how to decode them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from service.formats.coco_rle import class_counts, counts_to_string, label_runs
from service.formats.polygons import Rings, label_polygons
from service.georef import GeoReference

# Douglas-Peucker tolerance in pixels for polygons and GeoJSON: the one default that the HTTP
# query, the CLI and the encoders share (docs/formats.md: why not 1 px).
DEFAULT_TOLERANCE = 0.5
MAX_TOLERANCE = 100.0


def present_classes(mask: np.ndarray, classes: Sequence[str]) -> Iterator[tuple[int, str, int]]:
    """``(index, name, pixels)`` of every class with at least one pixel, in class order."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))
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


def _nested(rings: Rings, georef: GeoReference | None = None) -> list[list[list[list[float]]]]:
    """Rings -> ``[[outer, hole, ...], ...]`` of ``[x, y]`` lists (map coordinates if given)."""
    if georef is None:
        polygons = rings.polygons()
    else:  # a mirroring transform would turn outer rings clockwise: reverse them back
        polygons = rings.polygons(georef.apply(rings.points), reverse=georef.flips)
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
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: one MultiPolygon feature per class present.

    Coordinates are pixel ones (x right, y down) unless ``georef`` maps them onto the map.
    """
    check_tolerance(tolerance)
    present = list(present_classes(mask, classes))
    outlines = label_polygons(mask, [index for index, _, _ in present], tolerance)
    features = [
        {
            "type": "Feature",
            "id": index,
            "properties": {"index": index, "name": name, "pixels": pixels},
            "geometry": {"type": "MultiPolygon", "coordinates": _nested(rings, georef)},
        }
        for (index, name, pixels), (_, rings) in zip(present, outlines, strict=True)
    ]
    collection: dict[str, Any] = {
        "type": "FeatureCollection",
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "tolerance": tolerance,
        "coordinates": "pixel" if georef is None else "map",
    }
    if georef is not None:
        collection["crs"] = georef.crs
        collection["transform"] = list(georef.transform)
    collection["features"] = features
    return collection


def check_tolerance(tolerance: float) -> None:
    """Raise ``ValueError`` unless ``0 <= tolerance <= MAX_TOLERANCE``."""
    if not 0.0 <= tolerance <= MAX_TOLERANCE:
        raise ValueError(f"tolerance must be in [0, {MAX_TOLERANCE:g}] pixels, got {tolerance}")
