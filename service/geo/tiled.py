"""Blended sliding-window inference over a raster of any size, in bounded memory.

The windows and their blend weights are the engine's own (:mod:`service.geo.grid`,
:func:`~service.engine.tiling.blend_window`), so a raster segmented here and an in-memory image
tiled by :class:`service.engine.Engine` give the same mask. What differs is where the pixels
come from and go to: one column :class:`~service.geo.grid.Panel` at a time, one strip of tile
rows of it is read from the raster (the next one is read on a background thread meanwhile),
its windows run on ``streams`` inference threads sharing the session (ONNX Runtime and
OpenVINO release the GIL, so two streams keep two cores busy), and the rows no later strip
touches are handed to a sink and forgotten.

Memory holds the sums of one window (``(K, tile, tile)`` float32), the sums of the rows the
next strip still adds to (``(K, overlap, panel)``), the logits of at most ``streams + 1``
windows and two strips of a panel's pixels: bounded by the tile and the panel width, whatever
the raster's width and height.

After each strip those unfinished rows' sums are the whole state of the run: :class:`Carry`.
A sink that saves it with the finished rows lets a killed run resume at the next strip and
still produce the same bytes.
"""

from __future__ import annotations

from collections import deque
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
        on_strip: receives each :class:`Strip`, in order; its ``carry`` is overwritten by the
            next strip (save or copy it during the call).
        panel: the columns to run (None: the whole width).
        start: the first strip to run; ``carry`` must then be the one saved after
            ``start - 1`` of this panel (None: nothing carried, right for ``start`` 0 and
            for :func:`~service.geo.grid.halo_start`).
        stop: the strip to stop before (None: the last one too).
        probabilities: also compute the per-class probabilities.
        streams: windows run at once.
    """
    panel = panel or grid.whole()
    strips = len(grid.ys)
    # (column in the panel, width) of each window, faded by its place in the raster
    cols = [(grid.xs[i] - panel.x0, grid.col_width(i)) for i in range(panel.first, panel.stop)]
    col_windows = [
        blend_window(grid.col_width(i), grid.overlap, i > 0, i < len(grid.xs) - 1)
        for i in range(panel.first, panel.stop)
    ]

    def read_strip(index: int) -> tuple[np.ndarray, np.ndarray]:
        return read(grid.ys[index], panel.x0, grid.row_height(index), panel.width)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="fcn-geo-read") as reader,
        ThreadPoolExecutor(streams, thread_name_prefix="fcn-geo-infer") as pool,
    ):
        pending: Future | None = None
        end = strips if stop is None else min(stop, strips)
        for index in range(start, end):
            y0 = grid.ys[index]
            pixels, valid = pending.result() if pending else read_strip(index)
            if index + 1 < end:  # read the next strip while this one runs
                pending = reader.submit(read_strip, index + 1)
            row = _StripSums(engine, grid, panel, index, carry, probabilities)
            tiles_run = row.run(pool, streams + 1, cols, col_windows, pixels, valid)
            carry = row.carry
            count = panel.index * strips + index + 1
            mask, probs = row.mask, row.probabilities
            on_strip(
                Strip(index, y0, panel.own0, mask, probs, tiles_run, carry, panel.index, count)
            )


class _StripSums:
    """One strip's weighted logits, summed window by window, left to right.

    Only a window's width of sums is held (``tile_h x tile_w`` per class): once a window is
    added, the columns left of the next window's start are final. Their finished rows become
    the strip's mask (and probabilities); the rows the next strip still adds to (its top
    overlap) go to :attr:`carry`, ``(K, rows, panel width)``. Each pixel receives the carry
    and then its windows in the same order as a whole-strip accumulator would, so the result
    is the same bytes, with memory of the carry and one window instead of a tile-high strip.
    """

    def __init__(
        self,
        engine: Engine,
        grid: Grid,
        panel: Panel,
        index: int,
        carry: Carry | None,
        probabilities: bool,
    ) -> None:
        k = engine.metadata.num_classes
        self.engine, self.panel, self.probs_wanted = engine, panel, probabilities
        self.h, self.tile_w, self.width = grid.row_height(index), grid.tile_w, panel.width
        self.last = index == len(grid.ys) - 1
        self.done = grid.rows_done(index)
        self.carry_in = carry
        self.row_window = blend_window(self.h, grid.overlap, index > 0, not self.last)
        self.total = np.zeros((k, self.h, self.tile_w), dtype=np.float32)
        self.weight = np.zeros((self.h, self.tile_w), dtype=np.float32)
        self.base = 0  # the panel column of the sums' first column
        rows = self.h - self.done
        if self.last:
            self.carry = None
        elif carry is not None and carry.weight.shape == (rows, self.width):
            # Each carried column is read into the sums before that column's own carry is
            # written: one carry buffer serves every strip of the panel.
            self.carry = carry
        else:
            self.carry = Carry(
                np.empty((k, rows, self.width), dtype=np.float32),
                np.empty((rows, self.width), dtype=np.float32),
            )
        own = panel.own1 - panel.own0
        self.mask = np.full((self.done, own), NODATA, dtype=np.uint8)
        self.probabilities = (
            np.zeros((k, self.done, own), dtype=np.uint8) if probabilities else None
        )
        self._load(0, self.tile_w)

    def run(self, pool, lookahead, cols, col_windows, pixels, valid) -> int:
        """Add every window of the strip (``lookahead`` submitted ahead of the one added,
        so at most that many windows' logits are held) and finish every column."""

        def infer(x: int, w: int) -> np.ndarray:
            window = self.engine.normalise(pixels[:, x : x + w])
            return np.array(self.engine.run_normalised(window[None])[0])  # writable, contiguous

        def submit(i: int) -> Future | None:
            x, w = cols[i]  # a window without a valid pixel is not run
            return pool.submit(infer, x, w) if valid[:, x : x + w].any() else None

        ahead: deque[Future | None] = deque()
        tiles_run = 0
        for i, ((x, w), col_window) in enumerate(zip(cols, col_windows, strict=True)):
            while len(ahead) < lookahead and i + len(ahead) < len(cols):
                ahead.append(submit(i + len(ahead)))
            future = ahead.popleft()
            if future is not None:
                logits = future.result()
                del future  # its result is freed with logits, not with the deque
                blend = self.row_window[:, None] * col_window[None, :]
                logits *= blend
                at = x - self.base
                self.total[:, :, at : at + w] += logits
                self.weight[:, at : at + w] += blend
                del logits
                tiles_run += 1
            self._finish_until(cols[i + 1][0] if i + 1 < len(cols) else self.width, valid)
        return tiles_run

    def _load(self, at: int, stop: int) -> None:
        """Start sums columns ``at .. stop - 1`` from the carry (zeros below it)."""
        a, b = self.base + at, min(self.base + stop, self.width)
        self.total[:, :, at:stop] = 0.0
        self.weight[:, at:stop] = 0.0
        if self.carry_in is not None and b > a:
            rows = self.carry_in.weight.shape[0]
            self.total[:, :rows, at : at + b - a] = self.carry_in.total[:, :, a:b]
            self.weight[:rows, at : at + b - a] = self.carry_in.weight[:, a:b]

    def _finish_until(self, column: int, valid: np.ndarray) -> None:
        """Columns ``base .. column - 1`` are final: into the mask and the carry, then shift."""
        a, b, n = self.base, column, column - self.base
        if n <= 0:
            return
        if self.carry is not None:
            self.carry.total[:, :, a:b] = self.total[:, self.done :, :n]
            self.carry.weight[:, a:b] = self.weight[self.done :, :n]
        own0, own1 = self.panel.own0 - self.panel.x0, self.panel.own1 - self.panel.x0
        o0, o1 = max(a, own0), min(b, own1)
        if o1 > o0:
            mask, probs = _finish(
                self.total[:, : self.done, o0 - a : o1 - a],
                self.weight[: self.done, o0 - a : o1 - a],
                valid[: self.done, o0:o1],
                self.probs_wanted,
            )
            self.mask[:, o0 - own0 : o1 - own0] = mask
            if probs is not None:
                self.probabilities[:, :, o0 - own0 : o1 - own0] = probs
        keep = self.tile_w - n  # numpy buffers the overlapping copies
        self.total[:, :, :keep] = self.total[:, :, n:]
        self.weight[:, :keep] = self.weight[:, n:]
        self.base = b
        self._load(keep, self.tile_w)


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
