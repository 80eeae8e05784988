"""Closed rings of many polygons in flat arrays: what tracing produces and simplifying keeps.

Its own module so that :mod:`~service.formats.polygons` (tracing) and
:mod:`~service.formats.simplify` (Douglas-Peucker) both use it without importing each other.
"""

from __future__ import annotations

import numpy as np


class Rings:
    """Closed rings in one flat array: ``points[offsets[i]:offsets[i + 1]]`` is ring ``i``
    (its first point repeated at its end); ``polygon[i]`` says which polygon it bounds and
    ``outer[i]`` whether it is that polygon's outer ring (else a hole)."""

    def __init__(
        self, points: np.ndarray, offsets: np.ndarray, polygon: np.ndarray, outer: np.ndarray
    ) -> None:
        self.points = points
        self.offsets = offsets
        self.polygon = polygon
        self.outer = outer

    def __len__(self) -> int:
        return len(self.polygon)

    def with_points(self, points: np.ndarray, offsets: np.ndarray) -> Rings:
        """The same rings with other points (e.g. simplified), grouped as before."""
        return Rings(points, offsets, self.polygon, self.outer)

    def polygons(
        self, points: np.ndarray | None = None, reverse: bool = False
    ) -> list[list[np.ndarray]]:
        """One list of rings per polygon (outer ring first), each ring an ``(n, 2)`` array.

        Args:
            points: other coordinates for :attr:`points` (e.g. mapped onto a map).
            reverse: reverse every ring (after a mirroring transform, to keep orientations).
        """
        points = self.points if points is None else points
        out: list[list[np.ndarray]] = [[] for _ in range(int(self.polygon.max(initial=-1)) + 1)]
        bounds = self.offsets.tolist()
        pairs = zip(self.polygon.tolist(), self.outer.tolist(), strict=True)
        for i, (p, outer) in enumerate(pairs):
            ring = points[bounds[i] : bounds[i + 1]]
            ring = ring[::-1] if reverse else ring
            if outer:
                out[p].insert(0, ring)
            else:
                out[p].append(ring)
        return out
