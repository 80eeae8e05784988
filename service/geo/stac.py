"""A STAC Item beside a raster's outputs: ``NAME.stac.json`` (STAC 1.1.0, from plain dicts).

It says where the outputs lie, what they hold and which model made them, so a STAC catalogue
or browser can list a run's results:

* ``geometry`` / ``bbox``: the raster's footprint in WGS 84 longitude/latitude (its edges
  densified before being reprojected, so a footprint that bends in degrees stays inside);
* ``properties.datetime``: the input's ``TIFFTAG_DATETIME`` (a TIFF date has no time zone: read
  as UTC), else the processing time, which ``created`` always gives;
* the projection extension (``proj:code`` or ``proj:wkt2``, ``proj:shape``, ``proj:transform``,
  ``proj:bbox``), shared by every asset;
* assets with hrefs relative to the Item: ``mask`` (``classification:classes``: value, name,
  colour of each class, and the nodata value), ``probabilities``, and ``vectors`` once
  :func:`add_vectors_asset` adds them;
* the machine-learning-model (MLM) extension's fields for the model, from its ONNX metadata.

:func:`service.geo.run.finish_raster` writes it for every raster run (local, Ray, jobs).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from service.geo.resume import save_json
from service.geo.tiled import NODATA

STAC_VERSION = "1.1.0"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
MLM = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
VECTOR_TYPES = {
    ".gpkg": "application/geopackage+sqlite3",
    ".fgb": "application/vnd.flatgeobuf",
    ".geojson": "application/geo+json",
}
# points per footprint edge reprojected to WGS 84
DENSIFY = 21


def stac_path(stem: Path) -> Path:
    """``STEM.stac.json``."""
    return stem.with_name(stem.name + ".stac.json")


def write_stac_item(stem: Path, source: Path, outputs: list[Path], meta, tags: dict) -> Path:
    """Write ``STEM.stac.json`` for the finished ``outputs`` (mask COG, then probabilities)."""
    import rasterio

    with rasterio.open(outputs[0]) as mask:
        crs, transform, height, width = mask.crs, mask.transform, mask.height, mask.width
        bounds = mask.bounds
    with rasterio.open(source) as src:
        stamp = src.tags().get("TIFFTAG_DATETIME")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    geometry, bbox = footprint(crs, bounds)
    properties = {
        "datetime": _tiff_datetime(stamp) or now,
        "created": now,
        "proj:code": f"EPSG:{crs.to_epsg()}" if crs is not None and crs.to_epsg() else None,
        "proj:shape": [height, width],
        "proj:transform": [
            transform.a,
            transform.b,
            transform.c,
            transform.d,
            transform.e,
            transform.f,
        ],
        "proj:bbox": list(bounds),
        **mlm_fields(meta, tags),
    }
    if crs is not None and properties["proj:code"] is None:
        properties["proj:wkt2"] = crs.to_wkt()
    assets = {"mask": _mask_asset(outputs[0], stem, meta)}
    if len(outputs) > 1:
        bands = [{"name": _name(c), "description": f"P({c}) x 255"} for c in meta.classes]
        assets["probabilities"] = {
            "href": _href(outputs[1], stem),
            "type": COG_TYPE,
            "title": "probability of each class x 255 (uint8)",
            "roles": ["data"],
            "bands": bands,
        }
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [PROJECTION, CLASSIFICATION, MLM],
        "id": stem.name,
        "geometry": geometry,
        **({"bbox": bbox} if bbox is not None else {}),
        "properties": properties,
        "links": [
            {"rel": "derived_from", "href": _href(source, stem), "type": "image/tiff"},
        ],
        "assets": assets,
    }
    path = stac_path(stem)
    save_json(path, item)
    return path


def footprint(crs, bounds) -> tuple[dict | None, list[float] | None]:
    """The ``bounds`` rectangle in WGS 84: ``(GeoJSON polygon, [west, south, east, north])``;
    ``(None, None)`` without a CRS."""
    from rasterio.warp import transform

    if crs is None:
        return None, None
    left, bottom, right, top = bounds
    steps = [i / (DENSIFY - 1) for i in range(DENSIFY)]
    ring = [(left + (right - left) * t, top) for t in steps]
    ring += [(right, top + (bottom - top) * t) for t in steps[1:]]
    ring += [(right + (left - right) * t, bottom) for t in steps[1:]]
    ring += [(left, bottom + (top - bottom) * t) for t in steps[1:]]
    lons, lats = transform(crs, "EPSG:4326", [x for x, _ in ring], [y for _, y in ring])
    points = [[round(x, 9), round(y, 9)] for x, y in zip(lons, lats, strict=True)]
    points[-1] = points[0]  # closed exactly
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [points]}, bbox


def classes(meta) -> list[dict]:
    """``classification:classes``: each class's value, name, title and colour; then nodata."""
    entries = [
        {"value": i, "name": _name(c), "title": c, "color_hint": "".join(f"{v:02X}" for v in rgb)}
        for i, (c, rgb) in enumerate(zip(meta.classes, meta.palette, strict=True))
    ]
    entries.append({"value": NODATA, "name": "nodata", "title": "no data", "nodata": True})
    return entries


def mlm_fields(meta, tags: dict) -> dict:
    """The MLM extension's fields for the model, as far as its ONNX metadata says."""
    bands = [f"band_{b}" for b in tags.get("BANDS", "").split(",") if b]
    layout = ["batch", "channel", "height", "width"]
    options = dict(meta.options)
    architecture = meta.arch + (f" ({options['encoder']} encoder)" if "encoder" in options else "")
    return {
        "mlm:name": tags.get("MODEL", meta.arch),
        "mlm:architecture": architecture,
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "ONNX",
        **(
            {"mlm:framework_version": f"opset {meta.extra['opset']}"}
            if "opset" in meta.extra
            else {}
        ),
        "mlm:hyperparameters": options,
        "mlm:input": [
            {
                "name": "image",
                "bands": bands,
                "input": {
                    "shape": [-1, meta.in_channels, -1, -1],
                    "dim_order": layout,
                    "data_type": "float32",
                },
                "description": (
                    f"the raster's bands mapped to 0..255 ({tags.get('RESCALE', 'as is')}), "
                    f"then z-scored; height and width multiples of {meta.size_multiple}, "
                    "run in overlapping blended windows"
                ),
                "value_scaling": [
                    {"type": "z-score", "mean": m * 255.0, "stddev": s * 255.0}
                    for m, s in zip(meta.mean, meta.std, strict=True)
                ],
                "resize_type": None,
            }
        ],
        "mlm:output": [
            {
                "name": "logits",
                "tasks": ["semantic-segmentation"],
                "result": {
                    "shape": [-1, meta.num_classes, -1, -1],
                    "dim_order": layout,
                    "data_type": "float32",
                },
                "description": "per-class logits; the mask is their argmax",
                "classification:classes": classes(meta)[:-1],
            }
        ],
    }


def add_vectors_asset(stem: Path, vectors: Path) -> None:
    """Add the ``vectors`` asset (``--vectors``' file) to ``STEM.stac.json``."""
    path = stac_path(stem)
    item = json.loads(path.read_text())
    item["assets"]["vectors"] = {
        "href": _href(vectors, stem),
        "type": VECTOR_TYPES.get(vectors.suffix, "application/octet-stream"),
        "title": "one polygon per connected region of a class (class_index, class_name, area)",
        "roles": ["data"],
    }
    save_json(path, item)


def lists_all(stem: Path, paths: list[Path]) -> bool:
    """Whether ``STEM.stac.json`` exists and has an asset for each of ``paths`` (the resume
    check: a run killed between its vectors and the Item's update is not complete)."""
    try:
        item = json.loads(stac_path(stem).read_text())
    except (OSError, ValueError):
        return False
    hrefs = {asset.get("href") for asset in item.get("assets", {}).values()}
    return all(_href(p, stem) in hrefs for p in paths)


def _mask_asset(mask: Path, stem: Path, meta) -> dict:
    return {
        "href": _href(mask, stem),
        "type": COG_TYPE,
        "title": "class index of each pixel (uint8, nodata 255)",
        "roles": ["data"],
        "classification:classes": classes(meta),
    }


def _href(path: Path, stem: Path) -> str:
    """``path`` relative to the Item's folder, with forward slashes."""
    return Path(os.path.relpath(Path(path).resolve(), Path(stem).resolve().parent)).as_posix()


def _name(text: str) -> str:
    """A class name as the classification extension allows (letters, digits, - and _)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", text).strip("_") or "class"


def _tiff_datetime(stamp: str | None) -> str | None:
    """``YYYY:MM:DD HH:MM:SS`` (TIFF) -> RFC 3339 in UTC; None when absent or malformed."""
    if not stamp:
        return None
    try:
        when = datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
