"""Column panels: memory bounded by the panel, the same bytes as one full-width panel."""

from __future__ import annotations

import time
import tracemalloc

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
    # the raster windows (1024/256): 11 windows across 8,000 pixels are still one panel
    assert len(Grid.of(8000, 8000, 1024, 256, 32).panels()) == 1
    panels = Grid.of(1536, 24000, 1024, 256, 32).panels()
    assert max(p.own1 - p.own0 for p in panels) <= 8192 and len(panels) == 4


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
    grid = Grid.of(700, 1000, engine.tile_size, 64, engine.metadata.size_multiple)
    assert len(grid.panels(panel_width)) >= 3  # narrower than the raster: panels at work
    whole = segment_raster(
        engine, source, tmp_path / "whole" / "r", GeoOptions(probabilities=True, panel_width=4096)
    )
    began = time.perf_counter()
    cut = segment_raster(
        engine,
        source,
        tmp_path / "cut" / "r",
        GeoOptions(probabilities=True, panel_width=panel_width),
    )
    assert 0 < cut.seconds <= time.perf_counter() - began  # what km^2/hour is computed from
    assert cut.tiles_run > whole.tiles_run  # the windows across panel borders ran twice
    for a, b in zip(whole.outputs, cut.outputs, strict=True):
        expected, got = read_all(a), read_all(b)
        assert expected.shape == got.shape and (expected != 255).any()
        assert expected.tobytes() == got.tobytes()


def traced_peak_mb(engine, width: int, height: int) -> float:
    """Peak of the numpy/Python memory of segmenting a ``height x width`` raster (read from
    memory: what the raster path itself holds, without GDAL's block cache or the runtime's)."""
    from service.geo.tiled import segment_strips

    multiple = engine.metadata.size_multiple
    grid = Grid.of(height, width, engine.tile_size, engine.config.tile_overlap, multiple)

    def read(row: int, col: int, rows: int, cols: int):
        pixels = np.full((rows, cols, 3), 128, dtype=np.uint8)
        pixels[:, :, 0] = (np.arange(cols, dtype=np.int64) + col) % 251  # not a flat image
        return pixels, np.ones((rows, cols), dtype=bool)

    tracemalloc.start()
    try:
        for panel in grid.panels():
            segment_strips(engine, grid, read, lambda strip: None, panel=panel)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_width(conv_model) -> None:
    """8,000 and 24,000 pixels wide (the 64 MP and 0.58 GP rasters' widths): full-width strips
    (pixels, carried sums) would triple; a panel's stay the size of the narrow one's."""
    from service.engine import Engine
    from service.engine.config import EngineConfig

    config = EngineConfig(concurrency=2, intra_op_threads=1, tile_size=512, tile_overlap=128)
    engine = Engine.load(conv_model, config)
    narrow, wide = traced_peak_mb(engine, 8000, 700), traced_peak_mb(engine, 24000, 700)
    print(f"traced peak: 8,000 wide {narrow:.0f} MB, 24,000 wide {wide:.0f} MB")
    strip = 512 * 8000 * 4 / 2**20  # a strip's pixels (3 bytes) and validity (1) at 8,000 wide
    assert narrow >= strip  # the measure sees what grows with the width
    assert wide <= 1.15 * narrow, (narrow, wide)
