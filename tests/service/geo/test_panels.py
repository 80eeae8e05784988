"""Column panels: memory bounded by the panel, the same bytes as one full-width panel."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from service.geo.grid import Grid
from service.geo.run import GeoOptions, segment_raster


@pytest.mark.parametrize(
    ("width", "tile", "overlap", "panel_width"),
    [(1000, 256, 64, 300), (1000, 256, 64, 400), (24000, 512, 128, 8192), (700, 512, 128, 1)],
)
def test_panels_own_every_column_once_and_run_every_window_touching_them(
    width, tile, overlap, panel_width
) -> None:
    grid = Grid.of(600, width, tile, overlap)
    panels = grid.panels(panel_width)
    assert panels[0].own0 == 0 and panels[-1].own1 == width
    for left, right in zip(panels, panels[1:], strict=False):
        assert left.own1 == right.own0 and left.own0 < left.own1
    for panel in panels:
        assert panel.own1 - panel.own0 <= max(panel_width, grid.tile_w)
        touching = [
            i for i, x in enumerate(grid.xs) if x < panel.own1 and x + grid.tile_w > panel.own0
        ]
        assert list(range(panel.first, panel.stop)) == touching
        assert (panel.x0, panel.x1) == (grid.xs[panel.first], grid.xs[panel.stop - 1] + tile)


def test_an_8000_wide_raster_is_one_panel_and_a_24000_wide_one_three() -> None:
    assert len(Grid.of(8000, 8000, 512, 128).panels()) == 1
    panels = Grid.of(1536, 24000, 512, 128).panels()
    assert len(panels) == 3
    assert max(p.width for p in panels) <= 8192 + 512


def test_panel_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match="panel_width"):
        Grid.of(100, 100, 64, 16).panels(0)


def read_all(path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


@pytest.mark.parametrize("panel_width", [200, 400])
def test_panels_write_the_same_bytes_as_one_panel(
    make_raster, engine_for, tmp_path, panel_width
) -> None:
    engine = engine_for(tile_size=256, tile_overlap=64)
    source = make_raster("resume", 1000, 700)
    grid = Grid.of(700, 1000, engine.tile_size, 64)
    assert len(grid.panels(panel_width)) >= 3  # narrower than the raster: panels at work
    whole = segment_raster(
        engine, source, tmp_path / "whole" / "r", GeoOptions(probabilities=True, panel_width=4096)
    )
    cut = segment_raster(
        engine,
        source,
        tmp_path / "cut" / "r",
        GeoOptions(probabilities=True, panel_width=panel_width),
    )
    assert cut.tiles_run > whole.tiles_run  # the windows across panel borders ran twice
    for a, b in zip(whole.outputs, cut.outputs, strict=True):
        expected, got = read_all(a), read_all(b)
        assert expected.shape == got.shape and (expected != 255).any()
        assert expected.tobytes() == got.tobytes()
