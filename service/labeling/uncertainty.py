"""How sure the model is of one image: the score Label Studio sorts tasks by.

The score is the mean top-class probability over the image's *interior* pixels: every pixel
except those within one pixel of a change of predicted class. Why this measure:

* the top-class probability is what the engine computes anyway (a streaming softmax maximum,
  no ``K x H x W`` probability copy), and its mean is least-confidence sampling, the standard
  uncertainty for active learning; margin and entropy need every class's probability per pixel
  and rank images much the same way for a handful of classes;
* at a boundary between two regions every model is unsure (the label changes there), so the
  plain mean mostly counts boundary pixels: an image of many small buildings would look
  uncertain however well the model knows buildings. Leaving the boundary out ranks images by
  what the model does not know inside regions, which is what a label teaches it.

Low scores first (Label Studio: sort by prediction score, ascending) puts the most useful
images to label at the top. An image that is all boundary falls back to the plain mean.
"""

from __future__ import annotations

import numpy as np


def boundary(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels whose class differs from a 4-neighbour's, or next to such."""
    edge = np.zeros(mask.shape, bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def task_score(mask: np.ndarray, confidence: np.ndarray | None) -> float | None:
    """The image's score in ``[1/K, 1]`` (None without probabilities); see the module docstring."""
    if confidence is None or not confidence.size:
        return None
    interior = ~boundary(mask)
    values = confidence[interior] if interior.any() else confidence
    return round(float(values.mean()), 4)
