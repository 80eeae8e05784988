"""Blended sliding-window inference over a raster of any size, in bounded memory.

The windows and their blend weights are the engine's own (:mod:`service.geo.grid`,
:func:`~service.engine.tiling.blend_window`), so a raster segmented here and an in-memory image
tiled by :class:`service.engine.Engine` give the same mask. What differs is where the pixels
come from and go to: one column :class:`~service.geo.grid.Panel` at a time, one strip of tile
rows of it is read from the raster (the next one is read on a background thread meanwhile),
its windows run on ``streams`` inference threads sharing the session (ONNX Runtime and
OpenVINO release the GIL, so two streams keep two cores busy), and the rows no later strip
touches are handed to a sink and forgotten.

Memory holds one ``(K, tile, panel)`` float32 accumulator and one strip of a panel's pixels:
bounded by the panel width, whatever the raster's width and height.

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
from service.engine.tiling import blend_window
from service.geo.grid import Grid, Panel

NODATA = 255


@dataclass
class Carry:
    """The weighted logits and weights of rows the next strip of a panel still adds to."""

    total: np.ndarray  # (K, rows, panel width) float32
    weight: np.ndarray  # (rows, panel width) float32


@dataclass(frozen=True)
class Strip:
    """Finished rows of one panel: ``mask`` ``(rows, own1 - own0)`` uint8 at ``(y0, x0)``.

    ``strips_done`` counts the strips finished so far in run order (every strip of panel 0,
    then of panel 1, ...), this one included: where a resumed run starts.
    """

    index: int
    y0: int
    x0: int
    mask: np.ndarray
    probabilities: np.ndarray | None  # (K, rows, cols) uint8, softmax * 255
    tiles_run: int
    carry: Carry | None  # None after a panel's last strip
    panel: int = 0
    strips_done: int = 0


# (row, col, height, width) -> (height, width, C) uint8 pixels, (height, width) bool valid
ReadWindow = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]


def segment_strips(
    engine: Engine,
    grid: Grid,
    read: ReadWindow,
    on_strip: Callable[[Strip], None],
    *,
    panel: Panel | None = None,
    start: int = 0,
    stop: int | None = None,
    carry: Carry | None = None,
    probabilities: bool = False,
    streams: int = 2,
) -> None:
    """Run every strip of ``panel`` from ``start`` and hand each finished one to ``on_strip``.

    Args:
        engine: the loaded model.
        grid: the windows.
        read: ``read(row, col, height, width)``, as :meth:`service.geo.inputs.GeoRaster.read`.
        on_strip: receives each :class:`Strip`, in order; its ``carry`` is a view into the
            accumulator, valid only during the call (save or copy it there).
        panel: the columns to run (None: the whole width).
        start: the first strip to run; ``carry`` must then be the one saved after
            ``start - 1`` of this panel (None: nothing carried, right for ``start`` 0 and
            for :func:`~service.geo.grid.halo_start`).
        stop: the strip to stop before (None: the last one too).
        probabilities: also compute the per-class probabilities.
        streams: windows run at once.
    """
    panel = panel or grid.whole()
    k, strips = engine.metadata.num_classes, len(grid.ys)
    total = np.zeros((k, grid.tile_h, panel.width), dtype=np.float32)
    weight = np.zeros((grid.tile_h, panel.width), dtype=np.float32)
    if carry is not None:
        rows = carry.weight.shape[0]
        total[:, :rows], weight[:rows] = carry.total, carry.weight
    # (column in the panel, width) of each window, faded by its place in the raster
    cols = [(grid.xs[i] - panel.x0, grid.col_width(i)) for i in range(panel.first, panel.stop)]
    col_windows = [
        blend_window(grid.col_width(i), grid.overlap, i > 0, i < len(grid.xs) - 1)
        for i in range(panel.first, panel.stop)
    ]
    own = slice(panel.own0 - panel.x0, panel.own1 - panel.x0)

    def read_strip(index: int) -> tuple[np.ndarray, np.ndarray]:
        return read(grid.ys[index], panel.x0, grid.row_height(index), panel.width)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="fcn-geo-read") as reader,
        ThreadPoolExecutor(streams, thread_name_prefix="fcn-geo-infer") as pool,
    ):
        pending: Future | None = None
        end = strips if stop is None else min(stop, strips)
        for index in range(start, end):
            pixels, valid = pending.result() if pending else read_strip(index)
            if index + 1 < end:  # read the next strip while this one runs
                pending = reader.submit(read_strip, index + 1)
            last = index == strips - 1
            h = grid.row_height(index)
            row_window = blend_window(h, grid.overlap, index > 0, not last)
            runs = _run_row(engine, pool, cols, pixels, valid)
            for (x, w), col_window, logits in zip(cols, col_windows, runs, strict=True):
                if logits is None:  # every pixel nodata: nothing to blend
                    continue
                blend = row_window[:, None] * col_window[None, :]
                logits = logits.result()
                logits *= blend
                total[:, :h, x : x + w] += logits
                weight[:h, x : x + w] += blend
            done = grid.rows_done(index)
            mask, probs = _finish(
                total[:, :done, own], weight[:done, own], valid[:done, own], probabilities
            )
            # The carry is a view: on_strip saves it before the shift below overwrites it
            # (no copy of a (K, overlap, panel) block per strip).
            keep = None if last else Carry(total[:, done:], weight[done:])
            tiles_run = sum(r is not None for r in runs)
            count = panel.index * strips + index + 1
            y0, x0 = grid.ys[index], panel.own0
            on_strip(Strip(index, y0, x0, mask, probs, tiles_run, keep, panel.index, count))
            if keep is not None:
                rows = grid.tile_h - done
                total[:, :rows] = total[:, done:]  # numpy buffers overlapping copies
                weight[:rows] = weight[done:]
                total[:, rows:], weight[rows:] = 0.0, 0.0


def _run_row(
    engine: Engine,
    pool: ThreadPoolExecutor,
    cols: list[tuple[int, int]],
    pixels: np.ndarray,
    valid: np.ndarray,
) -> list[Future | None]:
    """Submit every window ``(x, width)`` of a strip that has a valid pixel (None for the others)."""

    def run(x: int, w: int) -> np.ndarray:
        window = engine.normalise(pixels[:, x : x + w])
        return np.array(engine.run_normalised(window[None])[0])  # writable, contiguous

    return [pool.submit(run, x, w) if valid[:, x : x + w].any() else None for x, w in cols]


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
