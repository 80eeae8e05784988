"""Tiled inference over a raster: the same windows as the engine, seams measured.

The check of issue 32: on a raster that fits in memory, the strip-wise geo path agrees with the
engine, and the 32-pixel bands around window borders are measured on their own (a seam would
show there first).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

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
    """A gap-free mosaic: geo mask, engine tiled (same windows) and untiled masks, border
    bands."""
    width, height, options = MOSAICS[request.param]
    engine = engine_for()
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


@pytest.mark.xfail(
    strict=True,
    reason="512/128 on the stride: 98.56% / 98.81% on the two mosaics; 1024/256 reaches 99.61% "
    "/ 99.69% but fcn predict then peaks at 1.36-1.46 GB on 64 MP (over the 1.0 GB bound), so it "
    "is not the default (docs/gis.md, 'Seams'; bench/results/seam_bench.json)",
)
def test_tiled_agrees_with_untiled_on_99_5_percent(seam_case) -> None:
    """Issue 32's bar, not met by the default windows (512/128)."""
    assert agreement(seam_case["geo"], seam_case["untiled"]) >= 0.995


@pytest.mark.slow  # two more 3-4 MP rasters through the default model
def test_1024_windows_agree_with_untiled_on_99_5_percent(seam_case, engine_for, tmp_path) -> None:
    """The bar with the windows that reach it (``--tile-size 1024 --tile-overlap 256``: more
    memory, docs/gis.md 'Seams'), on both mosaics, border bands included."""
    engine = engine_for(tile_size=1024, tile_overlap=256)
    result = segment_raster(engine, seam_case["path"], tmp_path / "seams", GeoOptions())
    with rasterio.open(result.outputs[0]) as mask_file:
        geo = mask_file.read(1)
    height, width = seam_case["shape"]
    grid = Grid.of(height, width, 1024, 256, engine.metadata.size_multiple)
    bands, untiled = border_bands(grid), seam_case["untiled"]
    overall, border = agreement(geo, untiled), agreement(geo, untiled, bands)
    print(f"1024/256: all {overall:.4f}, border bands {border:.4f}")
    assert grid.tiles == result.tiles > 1
    assert overall >= 0.995
    assert border >= agreement(geo, untiled, ~bands) - 0.01
