"""The pixel report: how many pixels of each class a mask holds, and what fraction.

The JSON output format and the batch summary's fractions both come from :func:`class_pixel_counts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.formats.raster import check_mask

# Pixels counted per np.bincount call in class_pixel_counts().
_COUNT_PIXELS = 1 << 22


def class_pixel_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``int64`` pixel count of each class ``0..num_classes-1`` in ``mask``.

    The one counter: the JSON report and the batch summary's fractions both come from it,
    and a batch asking for both counts once (``EncodeRequest.counts``).
    """
    check_mask(mask)
    if num_classes <= 16:  # a few byte comparisons beat bincount's widening to int64
        return np.array([np.count_nonzero(mask == k) for k in range(num_classes)], np.int64)
    counts = np.zeros(num_classes, dtype=np.int64)
    # np.bincount widens its input to int64: count in row blocks, not 8 bytes per pixel at once.
    rows = max(1, _COUNT_PIXELS // max(1, mask.shape[1]))
    for y in range(0, mask.shape[0], rows):
        counts += np.bincount(mask[y : y + rows].ravel(), minlength=num_classes)[:num_classes]
    return counts


def class_report(
    mask: np.ndarray, classes: Sequence[str], counts: np.ndarray | None = None
) -> dict[str, Any]:
    """Per-class pixel counts and fractions, JSON-able.

    Args:
        mask: ``(H, W)`` class indices.
        classes: class names in index order.
        counts: :func:`class_pixel_counts` of ``mask``, when the caller has them already.

    Returns:
        ``{"height", "width", "pixels", "classes": [{"index", "name", "pixels", "fraction"}]}``
        with one entry per class (zero counts included), in class order.
    """
    if counts is None:
        counts = class_pixel_counts(mask, len(classes))
    total = int(mask.size)
    return {
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "pixels": total,
        "classes": [
            {
                "index": index,
                "name": name,
                "pixels": int(counts[index]),
                "fraction": float(counts[index]) / total if total else 0.0,
            }
            for index, name in enumerate(classes)
        ],
    }
