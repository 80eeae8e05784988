"""A lower precision checked on the CPU that serves it, against crops recorded at export.

INT8 kernels differ by CPU: AVX2 without VNNI multiplies u8 x s8 with ``vpmaddubsw``, which
adds pairs of products into int16 and can saturate, while VNNI CPUs add into int32. A model
verified on one CPU (``precision_checks``) can therefore lose points on another. So ``fcn
export`` also stores a small *reference set* in the model: a few validation crops (PNG) and
the fp32 model's argmax on each, plus how each faster path scored on them where it was
exported. At load, ``--precision auto`` runs every candidate path on those crops on *this*
CPU and refuses one whose result falls outside the bound:

* pixel agreement with the fp32 argmax at least the export's minus
  :data:`MAX_AGREEMENT_DROP` points, and
* mIoU against the fp32 argmax (over the classes fp32 found) at least the export's minus
  :data:`MAX_MIOU_DROP` points.

The metadata value (key :data:`REFERENCE_KEY`)::

    {"side": 128, "crops": [{"image": "<base64 PNG>", "fp32": "<base64 PNG>"}, ...],
     "recorded": {"ort/int8": {"agreement": 98.9, "miou": 93.1}, ...}, "cpu": {...}}
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from service.imaging import normalise_pixels

REFERENCE_KEY = "reference_set"
MAX_AGREEMENT_DROP = 1.0  # points of pixel agreement a path may lose against its export record
MAX_MIOU_DROP = 3.0  # points of crop mIoU (fp32 argmax as labels) it may lose likewise


def encode_png(array: np.ndarray) -> str:
    """A uint8 ``(h, w)`` or ``(h, w, C)`` array as base64 PNG text (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """Inverse of :func:`encode_png`."""
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image)


@dataclass(frozen=True)
class CheckResult:
    """One path on the reference crops here, against the bound from its export record."""

    agreement: float  # percent of pixels equal to the fp32 argmax
    miou: float  # points, fp32 argmax as labels
    min_agreement: float | None
    min_miou: float | None

    @property
    def passed(self) -> bool:
        ok_agreement = self.min_agreement is None or self.agreement >= self.min_agreement
        return ok_agreement and (self.min_miou is None or self.miou >= self.min_miou)

    def describe(self) -> str:
        bound = (
            f" (bound {self.min_agreement:.2f}% / {self.min_miou:.2f})"
            if self.min_agreement is not None and self.min_miou is not None
            else " (no export record to compare with)"
        )
        return f"agreement {self.agreement:.2f}%, crop mIoU {self.miou:.2f}{bound}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agreement": round(self.agreement, 3),
            "miou": round(self.miou, 3),
            "min_agreement": self.min_agreement,
            "min_miou": self.min_miou,
            "passed": self.passed,
        }


def predict_crop(runner: Any, crop: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """The argmax of one crop (its sides a multiple of the model's stride) through ``runner``.

    The runner alone, without the engine's tiling or test-time augmentation: export records
    and the check at load both call this, so they measure the same thing.
    """
    logits = runner.run(normalise_pixels(crop, mean, std)[None])
    return logits[0].argmax(0).astype(np.uint8)


def crop_miou(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Mean IoU in points over the classes present in ``expected`` (or predicted)."""
    classes = np.union1d(np.unique(expected), np.unique(predicted))
    ious = []
    for cls in classes:
        p, e = predicted == cls, expected == cls
        if not e.any():
            continue  # a class fp32 never predicted: its false positives count in the others
        ious.append((p & e).sum() / (p | e).sum())
    return 100.0 * float(np.mean(ious)) if ious else 100.0


@dataclass(frozen=True)
class ReferenceSet:
    """The crops, fp32's answers and the export CPU's record of each path on them."""

    crops: tuple[np.ndarray, ...]
    expected: tuple[np.ndarray, ...]
    recorded: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> ReferenceSet | None:
        """Parse the metadata value; ``None`` when the model has none (or it is unreadable)."""
        if not isinstance(value, Mapping) or not value.get("crops"):
            return None
        try:
            crops = tuple(decode_png(c["image"]) for c in value["crops"])
            expected = tuple(decode_png(c["fp32"]) for c in value["crops"])
        except (KeyError, TypeError, ValueError, OSError):
            return None
        return cls(crops, expected, dict(value.get("recorded") or {}))

    def score(self, predict: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """``(agreement %, crop mIoU points)`` of ``predict(crop) -> argmax`` on every crop."""
        same = total = 0
        ious = []
        for crop, expected in zip(self.crops, self.expected, strict=True):
            got = predict(crop)
            same += int((got == expected).sum())
            total += expected.size
            ious.append(crop_miou(got, expected))
        return 100.0 * same / max(total, 1), float(np.mean(ious))

    def check(self, key: str, predict: Callable[[np.ndarray], np.ndarray]) -> CheckResult:
        """Score path ``key`` (``"backend/precision"``) here and set its bound."""
        agreement, miou = self.score(predict)
        record = self.recorded.get(key) or {}
        if "agreement" in record and "miou" in record:
            min_agreement = round(float(record["agreement"]) - MAX_AGREEMENT_DROP, 3)
            min_miou = round(float(record["miou"]) - MAX_MIOU_DROP, 3)
            return CheckResult(agreement, miou, min_agreement, min_miou)
        return CheckResult(agreement, miou, None, None)
