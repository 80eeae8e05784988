"""Where the windows of a raster lie: strips of tile rows, and column panels of them.

The windows and their starts are the engine's own (:func:`service.engine.tiling.tile_starts`,
on multiples of the model's stride; the last window of a row or column ends at the raster's
edge), so a raster segmented by :mod:`service.geo.tiled` and an in-memory image tiled by
:class:`service.engine.Engine` see the same windows.

A raster wider than a panel is cut into column :class:`Panel` s, segmented one after the other
(every strip of a panel, top to bottom, then the next panel): the accumulators span one panel,
not the raster, so memory does not grow with the width. A panel owns the columns between two
window starts and runs every window that touches them, the one straddling its left border too
(the only windows run twice). Each owned pixel therefore gets the same windows' logits, added
in the same order, as with one full-width panel: the masks are the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.tiling import tile_starts, window_side, window_size

# Columns a panel owns, at most (its first window's start to the next panel's). 8,192 keeps an
# 8,000-pixel-wide raster in one panel (no window run twice) and bounds the carried sums of a
# wider one to about what that raster needs.
PANEL_WIDTH = 8192


@dataclass(frozen=True)
class Panel:
    """A column range of the raster: the windows ``first .. stop - 1`` of :attr:`Grid.xs`.

    Attributes:
        index: its place, left to right.
        first, stop: the windows it runs (indices into ``Grid.xs``).
        x0, x1: the columns those windows cover (read and accumulated).
        own0, own1: the columns it finishes and writes; no window outside it touches them.
    """

    index: int
    first: int
    stop: int
    x0: int
    x1: int
    own0: int
    own1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0


@dataclass(frozen=True)
class Grid:
    """Where the windows of a ``height x width`` raster lie (starts on multiples of ``multiple``)."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    multiple: int = 1

    @classmethod
    def of(cls, height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> Grid:
        """The windows :func:`~service.engine.tiling.blended_strips` runs for these settings
        (``multiple``: the model's ``size_multiple``, as the engine passes it)."""
        tile_h, tile_w = min(tile, height), min(tile, width)
        ys = tuple(tile_starts(height, tile_h, overlap, multiple))
        xs = tuple(tile_starts(width, tile_w, overlap, multiple))
        return cls(height, width, tile_h, tile_w, overlap, ys, xs, multiple)

    @classmethod
    def of_config(cls, height: int, width: int, config, multiple: int) -> Grid:
        """The windows an engine with ``config`` (an :class:`~service.engine.EngineConfig`)
        runs for a model of stride ``multiple``: its tile size rounded up as the engine does."""
        side = window_side(config.tile_size, multiple)
        return cls.of(height, width, side, config.tile_overlap, multiple)

    def row_height(self, strip: int) -> int:
        """Rows of the windows of strip ``strip``: ``tile_h``, less for a last one cut short."""
        return window_size(self.height, self.tile_h, self.ys[strip])

    def col_width(self, index: int) -> int:
        """Columns of window column ``index``: ``tile_w``, less for a last one cut short."""
        return window_size(self.width, self.tile_w, self.xs[index])

    @property
    def tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    def rows_done(self, strip: int) -> int:
        """Rows of strip ``strip`` (from its top) that no later strip touches."""
        last = strip == len(self.ys) - 1
        return self.row_height(strip) if last else self.ys[strip + 1] - self.ys[strip]

    def whole(self) -> Panel:
        """The whole width as one panel."""
        return Panel(0, 0, len(self.xs), 0, self.width, 0, self.width)

    def panels(self, panel_width: int = PANEL_WIDTH) -> tuple[Panel, ...]:
        """The fewest column panels owning at most ``panel_width`` columns each (or one window,
        where a window is wider): each takes windows left to right while they fit.

        Raises:
            ValueError: ``panel_width`` is not positive.
        """
        if panel_width < 1:
            raise ValueError(f"panel_width must be >= 1 column, got {panel_width}")
        count, limit = len(self.xs), max(panel_width, self.tile_w)

        def owns(start: int, stop: int) -> int:  # columns of windows start .. stop - 1's panel
            return (self.xs[stop] if stop < count else self.width) - (
                self.xs[start] if start else 0
            )

        cuts = [0]
        while cuts[-1] < count:
            stop = cuts[-1] + 1
            while stop < count and owns(cuts[-1], stop + 1) <= limit:
                stop += 1
            cuts.append(stop)
        panels = []
        for index, (start, stop) in enumerate(zip(cuts, cuts[1:], strict=False)):
            own0 = self.xs[start] if start > 0 else 0
            own1 = self.xs[stop] if stop < count else self.width
            first = next(i for i, x in enumerate(self.xs) if x + self.col_width(i) > own0)
            end = self.xs[stop - 1] + self.col_width(stop - 1)
            panels.append(Panel(index, first, stop, self.xs[first], end, own0, own1))
        return tuple(panels)


def halo_start(grid: Grid, start: int) -> int:
    """The first strip whose windows reach strip ``start``'s rows.

    Running strips ``halo_start(grid, start) .. start - 1`` from nothing carried rebuilds the
    exact carry into ``start`` (earlier strips never touch those rows): how a worker that
    starts mid-raster gets the same sums as one run from the top.
    """
    first = start
    while first > 0 and grid.ys[first - 1] + grid.row_height(first - 1) > grid.ys[start]:
        first -= 1
    return first


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
