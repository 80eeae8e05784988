"""Sliding-window inference with blended logits, one strip of tile rows at a time.

Large images are cut into overlapping ``tile x tile`` windows. Each window's logits are weighted
by a window that fades to (almost) zero towards edges shared with a neighbour, because a
convolutional net sees zero padding there and is least reliable; summing weighted logits and
dividing by the summed weights hides the seams.

Memory stays bounded: only a ``(K, tile, W)`` accumulator for the current strip of tile rows is
kept. Once a strip is done, the rows that no later strip touches are final and handed to the
caller (who takes the argmax or stores them), and the remainder is shifted up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# Weight at a tile edge shared with a neighbour: small but non-zero, so every pixel has a
# positive total weight even where only faded edges cover it.
_EDGE_WEIGHT = 1e-3

RunTile = Callable[[int, int, int, int], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Evenly spaced window starts, multiples of ``multiple``, covering ``[0, length)``.

    Neighbours overlap by at least ``overlap``. Starts on multiples of the model's stride
    (``size_multiple``) matter: a strided net is not shift-invariant, so a window placed off
    that grid sees its pixels through other pooling phases than a whole-image run and labels
    a few percent of them differently (docs/gis.md, "Seams"). Windows are ``tile`` long
    except the last, which ends at the image border (:func:`window_size`) and is padded to
    the multiple there exactly as a whole-image run is.

    Args:
        length: the image side.
        tile: the window side (``> overlap``).
        overlap: the minimum overlap between neighbours.
        multiple: what every start is a multiple of (1 when ``tile - overlap`` is smaller).

    Returns:
        Sorted starts; the first is 0 and the last the first multiple at or past
        ``length - tile`` (or just ``[0]`` when the side fits in one window).
    """
    if length <= tile:
        return [0]
    step = (tile - overlap) // multiple  # the largest stride, in multiples
    if step < 1:
        multiple, step = 1, tile - overlap
    last = -(-(length - tile) // multiple)  # the last start, in multiples
    count = -(-last // step) + 1
    return [round(i * last / (count - 1)) * multiple for i in range(count)]


def window_side(tile_size: int, multiple: int) -> int:
    """The window side an engine runs for ``tile_size``: rounded up to the model's stride."""
    return -(-tile_size // multiple) * multiple


def window_size(length: int, tile: int, start: int) -> int:
    """The side of the window at ``start``: ``tile``, or less where the image ends first."""
    return min(tile, length - start)


def blend_window(length: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """1-D weights: 1 in the middle, a squared raised-cosine fade over ``overlap`` pixels at faded ends.

    Ends on the image border are not faded: no neighbour shares them.
    """
    weights = np.ones(length, dtype=np.float32)
    if overlap <= 0:
        return weights
    centres = np.arange(length, dtype=np.float32) + 0.5
    ramp = np.clip(centres / overlap, 0.0, 1.0)
    # Squared raised cosine (sin^4): smooth, and close to zero over the first few pixels,
    # where zero padding corrupts a convolutional net's output most.
    fade = ((0.5 - 0.5 * np.cos(np.pi * ramp)) ** 2).astype(np.float32)
    fade = np.maximum(fade, _EDGE_WEIGHT)
    if fade_start:
        weights = np.minimum(weights, fade)
    if fade_end:
        weights = np.minimum(weights, fade[::-1])
    return weights


def blended_strips(
    height: int,
    width: int,
    num_classes: int,
    tile: int,
    overlap: int,
    run_tile: RunTile,
    multiple: int = 1,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Run ``run_tile`` over overlapping windows and yield finished row bands.

    Args:
        height, width: the image size.
        num_classes: K, the logits channels ``run_tile`` returns.
        tile: the window side; windows are clipped to the image when it is smaller.
        overlap: the minimum overlap between neighbouring windows.
        run_tile: ``run_tile(y, x, h, w) -> float32 (K, h, w)`` logits for that window.
        multiple: window starts are multiples of it (:func:`tile_starts`): the model's stride.

    Yields:
        ``(y0, weighted_sum, weight)``: ``weighted_sum`` is ``(K, rows, width)`` and ``weight``
        ``(rows, width)`` for image rows ``y0 .. y0 + rows``; the averaged logits are their
        ratio (the argmax does not need the division). Bands arrive top to bottom, cover
        every row once, and are views into reused buffers: consume each before the next.
    """
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys = tile_starts(height, tile_h, overlap, multiple)
    xs = tile_starts(width, tile_w, overlap, multiple)
    cols = [(x, window_size(width, tile_w, x)) for x in xs]
    col_windows = [
        blend_window(w, overlap, fade_start=i > 0, fade_end=i < len(xs) - 1)
        for i, (_, w) in enumerate(cols)
    ]
    acc = np.zeros((num_classes, tile_h, width), dtype=np.float32)
    weight = np.zeros((tile_h, width), dtype=np.float32)
    for row, y in enumerate(ys):
        last = row == len(ys) - 1
        h = window_size(height, tile_h, y)
        row_window = blend_window(h, overlap, fade_start=row > 0, fade_end=not last)
        for (x, w), col_window in zip(cols, col_windows, strict=True):
            blend = row_window[:, None] * col_window[None, :]
            logits = run_tile(y, x, h, w)
            logits *= blend
            acc[:, :h, x : x + w] += logits
            weight[:h, x : x + w] += blend
        done = h if last else ys[row + 1] - y
        yield y, acc[:, :done], weight[:done]
        if not last:
            # Rows [y + done, y + tile_h) are shared with the next strip: move them to the top.
            keep = tile_h - done
            acc[:, :keep] = acc[:, done:].copy()
            acc[:, keep:] = 0.0
            weight[:keep] = weight[done:].copy()
            weight[keep:] = 0.0
