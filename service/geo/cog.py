"""Cloud-Optimized GeoTIFFs from the finished partial rasters (rio-cogeo).

The mask COG: one uint8 band of class indices, the input's CRS and transform, nodata 255, the
model's palette as its colour table (QGIS and GDAL show classes in their colours), the class
names as the band description and as ``CLASS_<i>`` / ``CLASSES`` tags, internal 512-pixel tiles,
DEFLATE, and overviews resampled by **mode** (a class index must never be averaged).

The probability COG: one uint8 band per class (softmax x 255, rounded), each described by its
class name, overviews by **average** (a probability may be).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from service.geo.tiled import NODATA

COG_PROFILE = {
    "driver": "GTiff",
    "interleave": "pixel",
    "tiled": True,
    "blockxsize": 512,
    "blockysize": 512,
    "compress": "DEFLATE",
    "predictor": 2,
    "BIGTIFF": "IF_SAFER",
}


def class_tags(classes: Sequence[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Dataset tags naming the classes (and whatever ``extra`` adds, e.g. model and rules)."""
    tags = {f"CLASS_{i}": name for i, name in enumerate(classes)}
    tags["CLASSES"] = json.dumps(list(classes))
    tags.update(extra or {})
    return tags


def colour_table(palette: Sequence[Sequence[int]]) -> dict[int, tuple[int, int, int, int]]:
    """The model palette as a GDAL colour table; nodata (255) transparent."""
    table = {i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(palette)}
    table[NODATA] = (0, 0, 0, 0)
    return table


def _describe(path: Path, descriptions: Sequence[str]) -> None:
    """Set band descriptions on the partial raster, which cog_translate carries over."""
    import rasterio

    with rasterio.open(path, "r+") as dst:
        for band, text in enumerate(descriptions, start=1):
            dst.set_band_description(band, text)


def write_mask_cog(
    partial: Path,
    target: Path,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    tags: dict[str, str] | None = None,
) -> Path:
    """Turn the finished partial mask into the COG ``target`` (replaced atomically)."""
    legend = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    _describe(partial, [f"class index ({legend}; {NODATA}=nodata)"])
    tmp = target.with_name(target.name + ".tmp.tif")
    with warnings.catch_warnings():  # a colour table makes the band "Palette": as intended
        warnings.filterwarnings("ignore", "Dataset color interpretation", UserWarning)
        _translate(partial, tmp, colormap=colour_table(palette), tags=class_tags(classes, tags))
    os.replace(tmp, target)
    return target


def _translate(partial: Path, tmp: Path, *, colormap: dict, tags: dict[str, str]) -> None:
    from rio_cogeo.cogeo import cog_translate

    cog_translate(
        str(partial),
        str(tmp),
        dict(COG_PROFILE),
        nodata=NODATA,
        overview_resampling="mode",
        colormap=colormap,
        additional_cog_metadata=tags,
        in_memory=False,
        quiet=True,
    )


def write_probability_cog(
    partial: Path, target: Path, classes: Sequence[str], tags: dict[str, str] | None = None
) -> Path:
    """Turn the finished partial probabilities into the COG ``target``."""
    from rio_cogeo.cogeo import cog_translate

    _describe(partial, [f"P({name}) x 255" for name in classes])
    tmp = target.with_name(target.name + ".tmp.tif")
    cog_translate(
        str(partial),
        str(tmp),
        dict(COG_PROFILE),
        overview_resampling="average",
        additional_cog_metadata=class_tags(classes, tags),
        in_memory=False,
        quiet=True,
    )
    os.replace(tmp, target)
    return target


def validate(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """``rio_cogeo``'s COG validation: ``(valid, errors, warnings)``."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)
