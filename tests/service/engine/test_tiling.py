"""Sliding-window bookkeeping: coverage, exact reassembly, seam down-weighting, bounded buffers."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.tiling import blend_window, blended_strips, tile_starts, window_size


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(1, 8, 2), (8, 8, 2), (9, 8, 2), (100, 32, 8), (1000, 96, 24)]
)
def test_tile_starts_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= tile - overlap).all()


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "multiple"),
    [
        (1500, 512, 128, 32),
        (2000, 512, 128, 32),
        (2000, 768, 192, 32),
        (517, 512, 128, 32),
        (9000, 1024, 256, 32),
        (100, 32, 8, 8),
        (100, 32, 15, 32),
    ],
)
def test_tile_starts_on_the_stride(length: int, tile: int, overlap: int, multiple: int) -> None:
    """Starts on multiples of the stride; windows overlap enough, and the last ends at the edge."""
    starts = tile_starts(length, tile, overlap, multiple)
    step = multiple if tile - overlap >= multiple else 1  # else no stride fits the overlap
    assert starts[0] == 0 and all(s % step == 0 for s in starts)
    sizes = [window_size(length, tile, s) for s in starts]
    assert starts[-1] + sizes[-1] == length
    assert all(size == tile for size in sizes[:-1]) and sizes[-1] > tile - step
    for s, size, following in zip(starts, sizes, starts[1:], strict=False):
        assert s < following and s + size - following >= overlap


def test_blend_window_fades_only_shared_edges() -> None:
    inner = blend_window(32, 8, fade_start=True, fade_end=True)
    assert inner[0] < 0.05 and inner[-1] < 0.05 and inner[16] == 1.0
    assert (inner > 0).all()
    assert np.allclose(inner, inner[::-1])
    border = blend_window(32, 8, fade_start=False, fade_end=True)
    assert border[0] == 1.0 and border[-1] < 0.05
    assert (blend_window(5, 0, True, True) == 1).all()


def field(height: int, width: int, k: int = 2) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([np.sin(y / 7.0) + x / 50.0, np.cos(x / 5.0) - y / 80.0][:k])


def reassemble(
    height: int, width: int, tile: int, overlap: int, run_tile, multiple: int = 1
) -> np.ndarray:
    out = np.full((2, height, width), np.nan, np.float32)
    strips = blended_strips(height, width, 2, tile, overlap, run_tile, multiple)
    for y0, total, weight in strips:
        rows = weight.shape[0]
        assert np.isnan(out[:, y0 : y0 + rows]).all(), "a row was yielded twice"
        out[:, y0 : y0 + rows] = total / weight
    return out


@pytest.mark.parametrize(("height", "width"), [(1, 1), (50, 7), (130, 97), (64, 64), (300, 33)])
def test_strips_reassemble_exactly(height: int, width: int) -> None:
    truth = field(height, width)
    calls = []

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        calls.append((h, w))
        return truth[:, y : y + h, x : x + w].copy()

    out = reassemble(height, width, 32, 8, run_tile)
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-5)
    assert all(h <= 32 and w <= 32 for h, w in calls)


@pytest.mark.parametrize(("height", "width"), [(130, 97), (300, 33), (64, 200)])
def test_strips_on_the_stride_reassemble_exactly(height: int, width: int) -> None:
    """Windows on multiples of 8: the last of a row or column is cut short at the edge."""
    truth = field(height, width)
    calls = []

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        calls.append((y, x, h, w))
        return truth[:, y : y + h, x : x + w].copy()

    out = reassemble(height, width, 32, 8, run_tile, multiple=8)
    np.testing.assert_allclose(out, truth, rtol=1e-5, atol=1e-5)
    assert all(y % 8 == 0 and x % 8 == 0 for y, x, _, _ in calls)
    assert all(y + h <= height and x + w <= width for y, x, h, w in calls)
    assert any(h < 32 for _, _, h, _ in calls) or height % 8 == 0


def test_seams_are_down_weighted() -> None:
    """Tiles that are wrong near their own edges (zero padding) must not show in the blend."""
    height, width, tile, overlap, band = 200, 260, 64, 16, 3
    truth = field(height, width)

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        logits = truth[:, y : y + h, x : x + w].copy()
        edge = np.ones((h, w), bool)
        edge[band:-band, band:-band] = False
        logits[:, edge] += 10.0  # a large error in a thin band along every tile edge
        return logits

    out = reassemble(height, width, tile, overlap, run_tile)
    inner = (slice(None), slice(band, -band), slice(band, -band))  # the image border is real
    error = np.abs(out - truth)[inner]
    assert error.max() < 0.2  # vs 10 for hard tile boundaries, ~5 for a plain average


def test_accumulator_is_one_strip_tall() -> None:
    sizes = []

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.zeros((3, h, w), np.float32)

    for _, total, _ in blended_strips(1000, 50, 3, 64, 16, run_tile):
        sizes.append(total.base.shape if total.base is not None else total.shape)
    assert all(shape == (3, 64, 50) for shape in sizes)
