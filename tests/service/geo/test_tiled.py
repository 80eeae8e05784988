"""Tiled inference over a raster: the same windows as the engine, seams measured.

The check of issue 32: on a raster that fits in memory, the strip-wise geo path agrees with the
engine, and the 32-pixel bands around window borders are measured on their own (a seam would
show there first).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from service.engine.config import RASTER_DEFAULTS
from service.geo.grid import Grid, border_bands
from service.geo.run import GeoOptions, segment_raster

# The seam mosaic, and one with other photos in other places and another window layout (so
# that a figure is not one image's): name -> (width, height, options).
MOSAICS = {
    "seams": (2000, 1500, {"gap_every": 0}),
    "seams_second": (2400, 1800, {"gap_every": 0, "cell": 600}),
}


@pytest.fixture(scope="module", params=list(MOSAICS))
def seam_case(request, make_raster, engine_for, tmp_path_factory):
    """A gap-free mosaic with the raster defaults' windows: geo mask, engine tiled (same
    windows) and untiled masks, border bands."""
    width, height, options = MOSAICS[request.param]
    engine = engine_for(RASTER_DEFAULTS["tile_size"], RASTER_DEFAULTS["tile_overlap"])
    path = make_raster(request.param, width, height, **options)
    out = tmp_path_factory.mktemp("seams")
    result = segment_raster(engine, path, out / "seams", GeoOptions())
    with rasterio.open(result.outputs[0]) as mask_file, rasterio.open(path) as src:
        geo = mask_file.read(1)
        pixels = src.read().transpose(1, 2, 0)
    multiple = engine.metadata.size_multiple
    grid = Grid.of(height, width, engine.tile_size, engine.config.tile_overlap, multiple)
    return {
        "geo": geo,
        "tiled": engine.predict(pixels, tiled=True),
        "untiled": engine.predict(pixels, tiled=False),
        "bands": border_bands(grid),
        "grid": grid,
        "tiles": result.tiles,
        "path": path,
        "shape": (height, width),
    }


def agreement(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is None:
        return float((a == b).mean())
    return float((a[where] == b[where]).mean())


def test_geo_path_runs_the_engines_windows(seam_case) -> None:
    # Same windows, same blend, same runtime: the same mask, to the pixel.
    grid = seam_case["grid"]
    assert grid.tiles == seam_case["tiles"] > 1
    assert all(start % grid.multiple == 0 for start in grid.ys + grid.xs) and grid.multiple == 32
    assert agreement(seam_case["geo"], seam_case["tiled"]) == 1.0


def test_no_seam_at_window_borders(seam_case) -> None:
    """Against the untiled run, pixels in the 32-pixel border bands agree about as well as the
    rest: the blend hides the seams (what differs is context the windows cannot see)."""
    geo, untiled, bands = seam_case["geo"], seam_case["untiled"], seam_case["bands"]
    inside, border = agreement(geo, untiled, ~bands), agreement(geo, untiled, bands)
    print(
        f"agreement with untiled: all {agreement(geo, untiled):.4f}, border bands "
        f"{border:.4f} ({bands.mean():.1%} of pixels), elsewhere {inside:.4f}"
    )
    assert border >= inside - 0.01


def test_tiled_agrees_with_untiled_on_99_5_percent(seam_case) -> None:
    """Issue 32's bar, with the raster defaults (1024/256 windows; the image defaults, 512/128,
    reach 98.56% / 98.81%: docs/gis.md 'Seams')."""
    geo, untiled, bands = seam_case["geo"], seam_case["untiled"], seam_case["bands"]
    overall, border = agreement(geo, untiled), agreement(geo, untiled, bands)
    print(f"raster defaults: all {overall:.4f}, border bands {border:.4f}")
    assert overall >= 0.995
