"""Douglas-Peucker simplification of many closed rings at once, with numpy.

Each pass splits every interval whose farthest point lies beyond the tolerance from its chord,
for all rings together, so the Python loop runs once per level of the recursion, not once per
ring or point.
"""

from __future__ import annotations

import numpy as np

from service.formats.rings import Rings


def _first_argmax(
    values: np.ndarray, offsets: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per group (``offsets`` into ``values``, ``owner`` = group of each value): the maximum
    and the position of its first occurrence."""
    best = np.maximum.reduceat(values, offsets)
    where = np.where(values == best[owner], np.arange(values.size), values.size)
    return best, np.minimum.reduceat(where, offsets)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points ``p`` to segments ``a``-``b`` (row-wise)."""
    ab = b - a
    length2 = np.einsum("ij,ij->i", ab, ab)
    t = np.einsum("ij,ij->i", p - a, ab) / np.where(length2 > 0, length2, 1.0)
    nearest = a + np.clip(t, 0.0, 1.0)[:, None] * ab
    return np.hypot(*(p - nearest).T)


def simplify(rings: Rings, tolerance: float) -> Rings:
    """Douglas-Peucker on every ring at once; ``tolerance`` in pixels (0 = unchanged).

    A ring that would keep fewer than four points keeps all of them.
    """
    if tolerance <= 0 or len(rings) == 0:
        return rings
    points, offsets = rings.points, rings.offsets
    first, closing = offsets[:-1], offsets[1:] - 1
    lengths = np.diff(offsets)
    keep = np.zeros(len(points), bool)
    keep[first] = keep[closing] = True
    # split each ring at its point farthest from its first one
    owner = np.repeat(np.arange(len(first)), lengths)
    far = np.hypot(*(points - points[first][owner]).T)
    _, split = _first_argmax(far, first, owner)
    keep[split] = True
    a = np.concatenate([first, split])
    b = np.concatenate([split, closing])
    while True:
        inner = b - a - 1
        a, b, inner = a[inner > 0], b[inner > 0], inner[inner > 0]
        if a.size == 0:
            break
        group = np.repeat(np.arange(a.size), inner)
        starts = np.concatenate(([0], np.cumsum(inner)[:-1]))
        index = a[group] + 1 + np.arange(group.size) - starts[group]
        distance = _segment_distance(points[index], points[a][group], points[b][group])
        best, at = _first_argmax(distance, starts, group)
        far_enough = best > tolerance
        middle = index[at[far_enough]]
        keep[middle] = True
        a = np.concatenate([a[far_enough], middle])
        b = np.concatenate([middle, b[far_enough]])
    # four points plus the closing one at least, else the ring stays as it was
    kept = np.add.reduceat(keep, first)
    keep[np.repeat(kept < 5, lengths)] = True
    new_lengths = np.add.reduceat(keep, first)
    offsets = np.concatenate(([0], np.cumsum(new_lengths)))
    return rings.with_points(points[keep], offsets)
