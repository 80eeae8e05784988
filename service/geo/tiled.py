"""Blended sliding-window inference over a raster of any size, in bounded memory.

The windows, their starts and their blend weights are the engine's own
(:func:`service.engine.tiling.tile_starts`, :func:`~service.engine.tiling.blend_window`), so a
raster segmented here and an in-memory image tiled by :class:`service.engine.Engine` see the
same windows. What differs is where the pixels come from and go to: one strip of tile rows is
read from the raster (the next one is read on a background thread meanwhile), its windows run on
``streams`` inference threads sharing the session (ONNX Runtime releases the GIL, so two streams
keep two cores busy), and the rows no later strip touches are handed to a sink and forgotten.

Memory holds one ``(K, tile, W)`` float32 accumulator and one strip of pixels: for a 24,000
pixel wide raster, six classes and 512-pixel tiles about 0.3 GB, whatever the height.

After each strip the accumulator's unfinished rows (the overlap with the next strip) are the
whole state of the run: :class:`Carry`. A sink that saves it with the finished rows lets a
killed run resume at the next strip and still produce the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.engine import Engine
from service.engine.engine import argmax_classes
from service.engine.tiling import blend_window, tile_starts

NODATA = 255


@dataclass(frozen=True)
class Grid:
    """Where the windows of a ``height x width`` raster lie."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def of(cls, height: int, width: int, tile: int, overlap: int) -> Grid:
        tile_h, tile_w = min(tile, height), min(tile, width)
        ys = tuple(tile_starts(height, tile_h, overlap))
        xs = tuple(tile_starts(width, tile_w, overlap))
        return cls(height, width, tile_h, tile_w, overlap, ys, xs)

    @property
    def tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    def rows_done(self, strip: int) -> int:
        """Rows of strip ``strip`` (from its top) that no later strip touches."""
        last = strip == len(self.ys) - 1
        return self.tile_h if last else self.ys[strip + 1] - self.ys[strip]


@dataclass
class Carry:
    """The weighted logits and weights of rows the next strip still adds to."""

    total: np.ndarray  # (K, rows, W) float32
    weight: np.ndarray  # (rows, W) float32


@dataclass(frozen=True)
class Strip:
    """Finished rows: ``mask`` ``(rows, W)`` uint8 and, when asked, ``probabilities``."""

    index: int
    y0: int
    mask: np.ndarray
    probabilities: np.ndarray | None  # (K, rows, W) uint8, softmax * 255
    tiles_run: int
    carry: Carry | None  # None after the last strip


ReadStrip = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (y0, rows) -> pixels, valid


def segment_strips(
    engine: Engine,
    grid: Grid,
    read: ReadStrip,
    on_strip: Callable[[Strip], None],
    *,
    start: int = 0,
    stop: int | None = None,
    carry: Carry | None = None,
    probabilities: bool = False,
    streams: int = 2,
) -> None:
    """Run every strip from ``start`` and hand each finished one to ``on_strip``, in order.

    Args:
        engine: the loaded model.
        grid: the windows.
        read: ``read(y0, rows)`` -> ``(rows, W, C)`` uint8 pixels, ``(rows, W)`` bool valid.
        on_strip: receives each :class:`Strip`; its ``carry`` is a view into the accumulator,
            valid only during the call (save or copy it there).
        start: the first strip to run; ``carry`` must then be the one saved after
            ``start - 1`` (None: nothing carried, right for ``start`` 0 and for
            :func:`halo_start`).
        stop: the strip to stop before (None: the last one too).
        probabilities: also compute the per-class probabilities.
        streams: windows run at once.
    """
    k = engine.metadata.num_classes
    total = np.zeros((k, grid.tile_h, grid.width), dtype=np.float32)
    weight = np.zeros((grid.tile_h, grid.width), dtype=np.float32)
    if carry is not None:
        rows = carry.weight.shape[0]
        total[:, :rows], weight[:rows] = carry.total, carry.weight
    col_windows = [
        blend_window(grid.tile_w, grid.overlap, i > 0, i < len(grid.xs) - 1)
        for i in range(len(grid.xs))
    ]
    with (
        ThreadPoolExecutor(1, thread_name_prefix="fcn-geo-read") as reader,
        ThreadPoolExecutor(streams, thread_name_prefix="fcn-geo-infer") as pool,
    ):
        pending: Future | None = None
        for index in range(start, len(grid.ys)):
            y = grid.ys[index]
            pixels, valid = pending.result() if pending else read(y, grid.tile_h)
            if index + 1 < len(grid.ys):  # read the next strip while this one runs
                pending = reader.submit(read, grid.ys[index + 1], grid.tile_h)
            last = index == len(grid.ys) - 1
            row_window = blend_window(grid.tile_h, grid.overlap, index > 0, not last)
            runs = _run_row(engine, pool, grid, pixels, valid)
            for x, col_window, logits in zip(grid.xs, col_windows, runs, strict=True):
                if logits is None:  # every pixel nodata: nothing to blend
                    continue
                w = row_window[:, None] * col_window[None, :]
                logits = logits.result()
                logits *= w
                total[:, :, x : x + grid.tile_w] += logits
                weight[:, x : x + grid.tile_w] += w
            done = grid.rows_done(index)
            mask, probs = _finish(total[:, :done], weight[:done], valid[:done], probabilities)
            # The carry is a view: on_strip saves it before the shift below overwrites it
            # (no copy of a (K, overlap, W) block per strip).
            keep = None if last else Carry(total[:, done:], weight[done:])
            tiles_run = sum(r is not None for r in runs)
            on_strip(Strip(index, y, mask, probs, tiles_run, keep))
            if keep is not None:
                rows = grid.tile_h - done
                total[:, :rows] = total[:, done:]  # numpy buffers overlapping copies
                weight[:rows] = weight[done:]
                total[:, rows:], weight[rows:] = 0.0, 0.0


def halo_start(grid: Grid, start: int) -> int:
    """The first strip whose windows reach strip ``start``'s rows.

    Running strips ``halo_start(grid, start) .. start - 1`` from nothing carried rebuilds the
    exact carry into ``start`` (earlier strips never touch those rows): how a worker that
    starts mid-raster gets the same sums as one run from the top.
    """
    first = start
    while first > 0 and grid.ys[first - 1] + grid.tile_h > grid.ys[start]:
        first -= 1
    return first


def _run_row(
    engine: Engine, pool: ThreadPoolExecutor, grid: Grid, pixels: np.ndarray, valid: np.ndarray
) -> list[Future | None]:
    """Submit every window of a strip that has a valid pixel (None for the others)."""

    def run(x: int) -> np.ndarray:
        window = engine.normalise(pixels[:, x : x + grid.tile_w])
        return np.array(engine.run_normalised(window[None])[0])  # writable, contiguous

    return [pool.submit(run, x) if valid[:, x : x + grid.tile_w].any() else None for x in grid.xs]


def _finish(
    total: np.ndarray, weight: np.ndarray, valid: np.ndarray, probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class indices (NODATA where invalid or never covered) and optional uint8 probabilities."""
    mask = argmax_classes(total, np.uint8)  # weights are a positive per-pixel factor
    invalid = ~valid | (weight <= 0)
    mask[invalid] = NODATA
    if not probabilities:
        return mask, None
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = total / np.where(weight > 0, weight, 1.0)
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    probs = np.rint(logits * 255.0).astype(np.uint8)
    probs[:, invalid] = 0
    return mask, probs


def border_bands(grid: Grid, band: int = 32) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``band / 2`` of a window edge shared by two windows.

    Where a seam would show; the seam check measures agreement there separately.
    """
    half = band // 2
    rows = np.zeros(grid.height, dtype=bool)
    cols = np.zeros(grid.width, dtype=bool)
    for line, starts, side in ((rows, grid.ys, grid.tile_h), (cols, grid.xs, grid.tile_w)):
        for i, start in enumerate(starts):
            edges = ([start] if i > 0 else []) + ([start + side] if i < len(starts) - 1 else [])
            for edge in edges:
                line[max(0, edge - half) : edge + half] = True
    return rows[:, None] | cols[None, :]
