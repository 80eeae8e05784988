"""Polygons (outer rings and holes) of the regions of a binary mask, written with numpy alone.

How, and why this way (docs/formats.md has the user's side):

* **Pixel-edge tracing.** Rings run along pixel edges, with vertices on pixel corners: pixel
  (row ``r``, column ``c``) is the square ``[c, c + 1] x [r, r + 1]``. Unsimplified, the
  polygons cover exactly the mask's pixels (a pixel is inside iff its centre is), so every
  loss comes from simplification alone. Centre-line tracers (OpenCV's ``findContours``,
  marching squares) run through pixel centres instead: a one-pixel-wide region has no area
  there and every region shrinks by half a pixel.
* **Runs, not unit edges.** A rectilinear ring alternates horizontal and vertical sides, and
  each side is a maximal run of equal pixel differences along a row or column boundary: one
  pass over the mask per direction finds the boundary's unit edges, and runs are merged from
  those alone. Sides are linked corner to corner by sorted-key lookups.
* **Touching corners.** Where two set pixels touch only diagonally (a "saddle" corner) the
  tracer turns right: set pixels are 4-connected, so the two are separate polygons that touch
  at a point. A ring that comes back to a saddle it has passed (a hole touching the outside,
  or another hole, at one corner) is split there; the signed area of each part tells an outer
  ring (positive) from a hole (negative). Every ring is then simple, as OGC requires.
* **Holes to their polygon.** A hole's top-left pixel has a set pixel to its left; the run of
  set pixels through it ends, further left, on a vertical side of a ring of the same connected
  region: that region's outer ring, or one of its holes whose outer ring is already known
  (holes are visited top to bottom, left to right, and that hole always comes first).
* **Simplification.** Douglas-Peucker with the tolerance in pixels, run on all rings at once
  (each pass splits every interval still too far from its chord); a ring it would reduce to
  fewer than four corners keeps its exact corners instead, so small regions keep their area.
  Rings are simplified one by one: with a tolerance above 0 two rings closer than the
  tolerance may cross (shapely's ``make_valid`` mends that where it matters).

Coordinates are integers (original corners are kept, never moved). An outer ring has positive
signed area in ``(x, y)`` (counter-clockwise when y points up, the GeoJSON rule), holes negative;
rings are closed (last point = first).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from service.formats.rings import Rings
from service.formats.simplify import simplify


def _runs(
    line: np.ndarray, along: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge unit edges, sorted by ``(line, along)``, into maximal runs of equal value.

    Returns:
        ``(line, first, last, value)`` per run: it covers ``first .. last - 1`` on its line.
    """
    if len(line) == 0:
        return line, along, along, value
    joined = (line[1:] == line[:-1]) & (along[1:] == along[:-1] + 1) & (value[1:] == value[:-1])
    first = np.flatnonzero(np.concatenate(([True], ~joined)))
    last = np.append(first[1:], len(line)) - 1
    return line[first], along[first], along[last] + 1, value[first]


class LabelEdges:
    """Every pixel edge between two different labels (or a label and the outside), found in one
    pass over the mask per direction, so that tracing each class costs only its own edges.

    Horizontal edges are sorted by (row boundary, column), vertical ones by (column boundary,
    row); the label on either side is kept (-1 outside the image).
    """

    def __init__(self, mask: np.ndarray) -> None:
        height, width = mask.shape
        self.shape = (height, width)
        columns = np.arange(width)
        y, x = np.divmod(np.flatnonzero(mask[1:] != mask[:-1]), width)
        y += 1
        self.h_line = np.concatenate([np.zeros(width, np.int64), y, np.full(width, height)])
        self.h_along = np.concatenate([columns, x, columns])
        outside = np.full(width, -1, np.int32)
        self.h_before = np.concatenate([outside, mask[y - 1, x], mask[-1]]).astype(np.int32)
        self.h_after = np.concatenate([mask[0], mask[y, x], outside]).astype(np.int32)
        rows = np.arange(height)
        y, x = np.divmod(np.flatnonzero(mask[:, 1:] != mask[:, :-1]), width - 1)
        x += 1
        line = np.concatenate([np.zeros(height, np.int64), x, np.full(height, width)])
        along = np.concatenate([rows, y, rows])
        outside = np.full(height, -1, np.int32)
        before = np.concatenate([outside, mask[y, x - 1], mask[:, -1]]).astype(np.int32)
        after = np.concatenate([mask[:, 0], mask[y, x], outside]).astype(np.int32)
        order = np.lexsort((along, line))
        self.v_line, self.v_along = line[order], along[order]
        self.v_before, self.v_after = before[order], after[order]

    def sides(self, label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Directed sides of every ring of ``label``: start and end corners, +-1 per side, and
        how many are horizontal. The label is on the right of the direction of travel (as
        drawn, y down)."""
        # +1: the label below a row boundary (heading east) / right of a column one (north)
        inside = self.h_after == label
        chosen = np.flatnonzero(inside | (self.h_before == label))
        y, x0, x1, east = _runs(
            self.h_line[chosen], self.h_along[chosen], np.where(inside[chosen], 1, -1)
        )
        h_start = np.stack([np.where(east > 0, x0, x1), y], axis=1)
        h_end = np.stack([np.where(east > 0, x1, x0), y], axis=1)
        inside = self.v_after == label
        chosen = np.flatnonzero(inside | (self.v_before == label))
        x, y0, y1, north = _runs(
            self.v_line[chosen], self.v_along[chosen], np.where(inside[chosen], 1, -1)
        )
        v_start = np.stack([x, np.where(north > 0, y1, y0)], axis=1)
        v_end = np.stack([x, np.where(north > 0, y0, y1)], axis=1)
        start = np.concatenate([h_start, v_start]).astype(np.int64)
        end = np.concatenate([h_end, v_end]).astype(np.int64)
        return start, end, np.concatenate([east, -north]).astype(np.int64), len(y)


def _link(start: np.ndarray, end: np.ndarray, sign: np.ndarray, horizontal: int) -> np.ndarray:
    """``next[i]``: the side that follows side ``i`` (at a saddle corner: the right turn)."""
    width = int(max(start[:, 0].max(), end[:, 0].max())) + 2
    vertex = start[:, 1] * width + start[:, 0]
    arrive = end[:, 1] * width + end[:, 0]
    # a side's key: its start corner and whether it is the right turn after the other kind
    # (east -> south and west -> north for horizontal sides; south -> west, north -> east)
    count = len(start)
    is_horizontal = np.arange(count) < horizontal
    # bit 1: west (horizontal) or south (vertical); wanted after east or after south
    key = vertex * 2 + np.where(is_horizontal, sign < 0, sign > 0)
    want = arrive * 2 + (sign > 0)
    nxt = np.empty(count, np.int64)
    for kind, others in (
        (slice(0, horizontal), slice(horizontal, count)),
        (slice(horizontal, count), slice(0, horizontal)),
    ):
        keys = key[others]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        query = want[kind]
        pos = np.searchsorted(sorted_keys, query)
        found = (pos < len(sorted_keys)) & (sorted_keys[np.minimum(pos, len(keys) - 1)] == query)
        other = np.searchsorted(sorted_keys, query ^ 1)  # a plain corner: the one way on
        pos = np.where(found, pos, other)
        nxt[kind] = order[pos] + others.start
    return nxt


def _cycles(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cycles of the permutation ``nxt``, by pointer doubling (no per-side Python loop).

    Returns:
        ``(order, cycle)``: the sides cycle after cycle, each cycle walked from its smallest
        side; and, per side, its cycle's smallest side.
    """
    count = len(nxt)
    smallest = np.arange(count)
    jump = nxt.copy()
    while True:  # after k rounds: the smallest of 2**k steps from each side
        reached = np.minimum(smallest, smallest[jump])
        if np.array_equal(reached, smallest):  # a round that changes nothing: none will
            break
        smallest = reached
        jump = jump[jump]
    # steps from each side to its cycle's last side (the one whose next is the smallest)
    rounds = int(np.bincount(smallest).max() - 1).bit_length()
    last = nxt == smallest
    steps = (~last).astype(np.int64)
    jump = np.where(last, np.arange(count), nxt)
    for _ in range(rounds):
        steps += steps[jump]
        jump = jump[jump]
    return np.lexsort((-steps, smallest)), smallest


def _split_at_repeats(cycle: list[int], vertex: list[int]) -> list[list[int]]:
    """Split a cycle of sides wherever it passes a corner again (saddles): simple rings."""
    rings, path, at = [], [], {}
    for side in cycle:
        v = vertex[side]
        if v in at:
            cut = at[v]
            rings.append(path[cut:])
            for s in path[cut:]:
                del at[vertex[s]]
            path = path[:cut]
        at[v] = len(path)
        path.append(side)
    rings.append(path)
    return rings


def _ring_sides(start: np.ndarray, nxt: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sides ring after ring (cycles split at repeated corners), and the ring offsets."""
    order, cycle = _cycles(nxt)
    cycle_sorted = cycle[order]
    bounds = np.flatnonzero(np.diff(cycle_sorted)) + 1
    offsets = np.concatenate(([0], bounds, [len(order)]))
    vertex = start[:, 1] * width + start[:, 0]
    # a cycle passes a corner twice only at a saddle (two sides leave it), both in that cycle
    by_vertex = np.argsort(vertex, kind="stable")
    same = np.flatnonzero(vertex[by_vertex][1:] == vertex[by_vertex][:-1])
    twice = cycle[by_vertex[same]] == cycle[by_vertex[same + 1]]
    to_split = np.unique(cycle[by_vertex[same[twice]]])
    if to_split.size == 0:
        return order, offsets
    first_of = np.searchsorted(cycle_sorted, to_split)
    cycle_index = np.searchsorted(offsets, first_of, side="right") - 1
    vertex_list = vertex.tolist()
    extra = []
    for c in cycle_index.tolist():
        lo, hi = int(offsets[c]), int(offsets[c + 1])
        parts = _split_at_repeats(order[lo:hi].tolist(), vertex_list)
        order[lo:hi] = [side for part in parts for side in part]
        extra.extend((lo + np.cumsum([len(part) for part in parts[:-1]])).tolist())
    return order, np.unique(np.concatenate((offsets, extra))).astype(np.int64)


def _per_ring(values: np.ndarray, offsets: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    return ufunc.reduceat(values, offsets[:-1]) if len(values) else values


def trace(binary: np.ndarray) -> Rings:
    """Exact outlines of the set pixels of ``binary`` (4-connected regions, with holes).

    Rings run through the midpoints of the boundary pixels' edges, so a pixel is set exactly
    when its centre is inside a polygon.

    Args:
        binary: ``(H, W)`` bool (or 0/1) array.

    Returns:
        The rings, grouped by region: outer ring, then its holes.
    """
    mask = np.asarray(binary, bool).view(np.uint8)
    return trace_label(mask, 1, LabelEdges(mask))


def trace_label(mask: np.ndarray, label: int, edges: LabelEdges | None = None) -> Rings:
    """:func:`trace` of ``mask == label``, reusing ``edges`` (of ``mask``) across labels."""
    edges = edges or LabelEdges(mask)
    start, end, sign, horizontal = edges.sides(label)
    if len(start) == 0:
        none = np.zeros(0, np.int64)
        return Rings(np.zeros((0, 2)), np.zeros(1, np.int64), none, none.astype(bool))
    nxt = _link(start, end, sign, horizontal)
    width = mask.shape[1] + 2
    order, offsets = _ring_sides(start, nxt, width)
    ring_of = np.empty(len(start), np.int64)
    ring_of[order] = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    corners = start[order]
    # shoelace per ring: twice the signed area, > 0 for outer rings
    following = np.arange(1, len(order) + 1)
    following[offsets[1:] - 1] = offsets[:-1]
    x, y = corners[:, 0], corners[:, 1]
    twice_area = _per_ring(x * y[following] - x[following] * y, offsets, np.add)
    region = _Region(mask, label, start, end, horizontal, ring_of)
    polygon = _group(region, corners, offsets, twice_area)
    points = _midpoints(corners, offsets, following)
    return Rings(points, _midpoint_offsets(corners, offsets, following), polygon, twice_area > 0)


def _side_lengths(corners: np.ndarray, following: np.ndarray) -> np.ndarray:
    return np.abs(corners[following] - corners).sum(axis=1)


def _midpoint_offsets(
    corners: np.ndarray, offsets: np.ndarray, following: np.ndarray
) -> np.ndarray:
    per_side = np.where(_side_lengths(corners, following) > 1, 2, 1)
    points = _per_ring(per_side, offsets, np.add) + 1  # + the closing point
    return np.concatenate(([0], np.cumsum(points)))


def _midpoints(corners: np.ndarray, offsets: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Corner rings -> closed rings through the midpoints of the pixel edges along them.

    Each side keeps the midpoints of its first and last pixel edge (one point for a side one
    pixel long); joining them cuts every corner by half a pixel.
    """
    step = np.sign(corners[following] - corners).astype(np.float64)
    length = _side_lengths(corners, following)
    first = corners + 0.5 * step
    last = corners[following] - 0.5 * step
    pairs = np.stack([first, last], axis=1)  # (sides, 2, 2)
    take = np.ones((len(corners), 2), bool)
    take[:, 1] = length > 1
    ring_points = pairs[take]
    # insert each ring's closing point after its last side's points
    per_side = take.sum(axis=1)
    ends = np.cumsum(per_side)[offsets[1:] - 1]
    starts = np.concatenate(([0], ends[:-1]))
    return np.insert(ring_points, ends, ring_points[starts], axis=0)


@dataclass(frozen=True)
class _Region:
    """What attaching holes needs: the mask, the label, the sides and the ring of each."""

    mask: np.ndarray
    label: int
    start: np.ndarray
    end: np.ndarray
    horizontal: int
    ring_of: np.ndarray


def _group(
    region: _Region, corners: np.ndarray, offsets: np.ndarray, twice_area: np.ndarray
) -> np.ndarray:
    """The polygon of each ring: outer rings number the polygons, each hole joins its region's.

    Returns:
        Per ring, its polygon's index (polygons numbered in the order of their outer rings).
    """
    shell = twice_area > 0
    polygon = np.full(len(twice_area), -1, np.int64)
    polygon[shell] = np.arange(int(shell.sum()))
    holes = np.flatnonzero(~shell)
    if holes.size == 0:
        return polygon
    height, width = region.mask.shape
    # each hole's top-left corner (smallest y, then x), visited in that order
    stride = width + 2
    key = _per_ring(corners[:, 1] * stride + corners[:, 0], offsets, np.minimum)[holes]
    order = np.argsort(key, kind="stable")
    holes, key = holes[order], key[order]
    y, x = key // stride, key % stride
    # the set run ending at pixel (y, x - 1) starts after the last clear pixel to its left
    rows, row_index = np.unique(y, return_inverse=True)
    cols = np.arange(1, width + 1, dtype=np.int32)
    inside = region.mask[rows] == region.label
    last_clear = np.maximum.accumulate(np.where(inside, 0, cols), axis=1)
    run_x = last_clear[row_index, x - 1]
    # the vertical side on column boundary run_x that covers row y: a ring of the same region
    h = region.horizontal
    v_x = region.start[h:, 0]
    v_top = np.minimum(region.start[h:, 1], region.end[h:, 1])
    v_key = v_x * (height + 1) + v_top
    v_order = np.argsort(v_key)
    found = np.searchsorted(v_key[v_order], run_x * (height + 1) + y, side="right") - 1
    left_ring = region.ring_of[h + v_order[found]].tolist()
    assigned = polygon.tolist()
    for hole, ring in zip(holes.tolist(), left_ring, strict=True):
        assigned[hole] = assigned[ring]  # an outer ring's, or an earlier hole's (see above)
    return np.asarray(assigned, np.int64)


def polygons(binary: np.ndarray, tolerance: float) -> Rings:
    """Outlines of ``binary``'s set pixels, each ring simplified within ``tolerance`` pixels."""
    return simplify(trace(binary), tolerance)


def label_polygons(
    mask: np.ndarray, labels: list[int], tolerance: float
) -> Iterator[tuple[int, Rings]]:
    """``(label, outlines)`` of each label in ``labels``, simplified within ``tolerance``; the
    mask's edges are found once for all of them."""
    edges = LabelEdges(mask)
    for label in labels:
        yield label, simplify(trace_label(mask, label, edges), tolerance)
