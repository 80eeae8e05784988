"""Label Studio ``brushlabels`` results as an annotator's client writes them, for the tests.

Written here from Label Studio's documented result format rather than with the service's own
writer (service.labeling.label_studio), so the tests that feed annotations to the service do not
share its mistakes.
"""

from __future__ import annotations

import numpy as np

from service.labeling import brush_rle


def brush_region(painted: np.ndarray, label: str) -> dict:
    """One ``brushlabels`` region painting ``painted`` (a bool mask) as ``label``; the labelling
    config's control is ``tag`` on the image ``image``."""
    height, width = painted.shape
    return {
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"format": "rle", "rle": brush_rle.encode(painted), "brushlabels": [label]},
    }


def mask_regions(mask: np.ndarray, classes: list[str]) -> list[dict]:
    """One region per class present in the class-index ``mask``; ``classes[i]`` names index i."""
    return [brush_region(mask == i, name) for i, name in enumerate(classes) if (mask == i).any()]
