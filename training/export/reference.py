"""The reference set ``fcn export`` stores in a model: crops, fp32's answers, each path's score.

See :mod:`service.backends.reference` for how the serving side uses it. Crops are taken from
the validation images the precision checks run on: :data:`CROPS` images spread over the set,
from each the :data:`SIDE`-pixel window (on a half-window grid) where the fp32 model finds the
most classes, so the check sees boundaries between classes rather than one flat class.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.backends.cpu import cpu_signature
from service.backends.reference import ReferenceSet, encode_png, predict_crop

CROPS = 4
SIDE = 128


def _window(expected: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the window of ``expected`` with the most classes (ties: most even mix)."""
    h, w = expected.shape
    best, best_key = (0, 0), (-1, -1.0)
    for top in range(0, max(h - side, 0) + 1, side // 2):
        for left in range(0, max(w - side, 0) + 1, side // 2):
            window = expected[top : top + side, left : left + side]
            counts = np.bincount(window.ravel())
            counts = counts[counts > 0] / window.size
            key = (len(counts), float(-(counts * np.log(counts)).sum()))
            if key > best_key:
                best, best_key = (top, left), key
    return best


def spread(total: int, count: int = CROPS) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them if fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({round(k * (total - 1) / (count - 1)) for k in range(count)})


def build_reference_set(
    images: list[np.ndarray],
    predictions: list[np.ndarray],
    reference: Any,
    candidates: Mapping[str, Any],
    *,
    side: int = SIDE,
) -> dict[str, Any] | None:
    """The ``reference_set`` metadata value, or ``None`` if no image is ``side`` pixels wide.

    Args:
        images: validation images ``(h, w, C)`` as the engine decodes them, one crop each
            (:func:`spread` picks which); a smaller image gives a smaller crop.
        predictions: the fp32 engine's masks of those images (to place the windows).
        reference: the fp32 engine (its ``backend`` gives fp32's crop answers).
        candidates: ``"backend/precision"`` -> engine, each recorded on the crops here.
    """
    meta = reference.metadata
    if meta.num_classes > 256:
        return None
    multiple = meta.size_multiple
    side = -(-side // multiple) * multiple
    crops, expected = [], []
    for image, prediction in zip(images, predictions, strict=True):
        # a smaller image gives a smaller crop: the largest multiple of the stride it holds
        crop_side = min(side, min(image.shape[:2]) // multiple * multiple)
        if crop_side == 0:
            continue
        top, left = _window(prediction, crop_side)
        crop = np.ascontiguousarray(image[top : top + crop_side, left : left + crop_side])
        crops.append(crop)
        expected.append(predict_crop(reference.backend, crop, meta.mean, meta.std))
    if not crops:
        return None
    refset = ReferenceSet(tuple(crops), tuple(expected), {})
    recorded = {}
    for key, engine in candidates.items():
        agreement, miou = refset.score(
            lambda crop, e=engine: predict_crop(e.backend, crop, meta.mean, meta.std)
        )
        recorded[key] = {"agreement": round(agreement, 3), "miou": round(miou, 3)}
    return {
        "side": side,
        "crops": [
            {"image": encode_png(c), "fp32": encode_png(e)}
            for c, e in zip(crops, expected, strict=True)
        ],
        "recorded": recorded,
        "cpu": cpu_signature(),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
