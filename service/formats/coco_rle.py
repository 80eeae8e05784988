"""COCO's compressed run-length encoding of binary masks, written with numpy alone.

COCO (and pycocotools, Detectron2, CVAT, Label Studio's COCO export, ...) stores a binary mask
as the lengths of alternating runs of 0s and 1s over the pixels in column-major order (down
the first column, then the next), starting with a run of 0s (of length 0 when the first pixel
is set). The "compressed" form writes those counts as an ASCII string: each count, minus the
count two places before it from the fourth on, in 5-bit groups, least significant first,
with bit 5 (0x20) saying that another group follows, plus 48 so that every byte is printable.
The last group of a count carries its sign in bit 4, so the deltas may be negative.

The run lengths of every class come from one pass over the label runs of the whole mask, so
encoding all the classes present costs about as much as encoding one.
"""

from __future__ import annotations

import numpy as np

# 5-bit groups per count: counts are at most H * W < 2**31 (deltas within +-2**31) -> 7 groups.
_GROUPS = 7


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal labels over ``mask`` in column-major order.

    Returns:
        ``(starts, lengths, labels)``: int64 offsets and lengths of the runs, and their labels.
    """
    flat = np.ascontiguousarray(mask.T).ravel()
    if flat.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, flat[:0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    lengths = np.diff(np.concatenate((starts, [flat.size])))
    return starts, lengths, flat[starts]


def class_counts(
    starts: np.ndarray, lengths: np.ndarray, labels: np.ndarray, label: int, size: int
) -> np.ndarray:
    """COCO run lengths (0s first) of ``mask == label`` from :func:`label_runs`' output."""
    chosen = labels == label
    on_start = starts[chosen]
    on_length = lengths[chosen]
    counts = np.empty(2 * on_start.size + 1, np.int64)
    ends = on_start + on_length
    counts[0] = on_start[0] if on_start.size else size
    counts[2::2] = np.append(on_start[1:], size) - ends  # the 0s after each run of 1s
    counts[1::2] = on_length
    return counts if counts[-1] else counts[:-1]  # no trailing run of 0s when it ends set


def counts_to_string(counts: np.ndarray) -> str:
    """The compressed COCO string of run lengths (what ``pycocotools.mask.encode`` writes)."""
    x = np.asarray(counts, np.int64).copy()
    if x.size > 2:
        x[3:] -= np.asarray(counts, np.int64)[1:-2]  # delta against the count two before
    shifts = 5 * np.arange(_GROUPS, dtype=np.int64)
    groups = (x[:, None] >> shifts) & 0x1F  # arithmetic shift: negatives keep their sign
    rest = x[:, None] >> (shifts + 5)
    more = np.where(groups & 0x10, rest != -1, rest != 0)
    # a count's groups end at its first group with no "more" after it
    used = np.cumprod(np.concatenate((np.ones((x.size, 1), bool), more[:, :-1]), axis=1), axis=1)
    chars = groups + 48 + 0x20 * more
    return chars[used.astype(bool)].astype(np.uint8).tobytes().decode("ascii")


def string_to_counts(text: str) -> np.ndarray:
    """Inverse of :func:`counts_to_string` (for tests and clients without pycocotools)."""
    counts: list[int] = []
    value = shift = 0
    for byte in text.encode("ascii"):
        c = byte - 48
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:  # sign-extend the last group
            value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        value = shift = 0
    return np.asarray(counts, np.int64)


def decode_counts(counts: np.ndarray, height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` bool mask that run lengths describe."""
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"run lengths cover {flat.size} pixels, expected {height * width}")
    return flat.reshape(width, height).T
