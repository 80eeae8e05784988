"""Segmentation metrics from a confusion matrix accumulated over a whole evaluation set.

``ConfusionMatrix`` counts ``(ground truth, prediction)`` pairs on the model's device with one
``bincount`` per batch (no host sync), so the metrics are exact over the set, not averages
of per-batch scores. Pixels whose ground truth is ``ignore_index`` (or any value outside
``0..K-1``, e.g. padding) are not counted. In distributed evaluation each rank counts its
shard and ``all_reduce`` sums the matrices.

Undefined values: a class absent from both the ground truth and the predictions has IoU and
Dice ``0/0``; they are ``NaN`` and left out of the means (``mIoU``, mean Dice), as is the
accuracy (recall) of a class absent from the ground truth. A class that is predicted but
never present scores IoU 0 and counts. JSON output writes ``NaN`` as ``null``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


class ConfusionMatrix:
    """A ``(K, K)`` int64 matrix: rows ground truth, columns prediction.

    Args:
        num_classes: K.
        device: where the counts live (the model's device avoids copies).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: ``prediction`` and ``target`` are class indices of equal shape.

        Target values outside ``0..K-1`` (the ignore index, padding) are skipped.
        """
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
            )
        k = self.num_classes
        target = target.reshape(-1).to(self.matrix.device, torch.int64)
        prediction = prediction.reshape(-1).to(self.matrix.device, torch.int64)
        valid = (target >= 0) & (target < k)
        # Boolean indexing would sync to size the result; send ignored pixels to an extra bin.
        index = torch.where(valid, target * k + prediction, k * k)
        self.matrix += torch.bincount(index, minlength=k * k + 1)[: k * k].view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrices of all ranks (no-op without torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self, classes: list[str] | None = None) -> Metrics:
        """The metrics of the counts so far (see :func:`metrics_from_matrix`)."""
        return metrics_from_matrix(self.matrix, classes)


@dataclass
class Metrics:
    """Evaluation results; per-class lists are in class-index order, NaN where undefined."""

    miou: float
    per_class_iou: list[float]
    pixel_accuracy: float
    mean_accuracy: float
    per_class_accuracy: list[float]
    dice: float  # mean Dice over defined classes
    per_class_dice: list[float]
    classes: list[str]
    pixels: int  # counted (non-ignored) pixels
    confusion_matrix: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        """Plain data with NaN as ``None`` (valid JSON; also fine for ``weights_only`` loads)."""
        return _nan_to_none(asdict(self))

    def summary(self) -> dict[str, float]:
        """The scalar metrics (for logs and CSV)."""
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "dice": self.dice,
        }


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~torch.isnan(values)]
    return float(defined.mean()) if defined.numel() else math.nan


def metrics_from_matrix(matrix: torch.Tensor, classes: list[str] | None = None) -> Metrics:
    """Per-class IoU, Dice and accuracy, and their means, from a confusion matrix.

    Args:
        matrix: ``(K, K)`` counts, rows ground truth, columns prediction.
        classes: class names (default ``class_0..``).

    Returns:
        ``Metrics``; NaN for classes where a score is ``0/0`` (excluded from the means).
    """
    counts = matrix.detach().to("cpu", torch.float64)
    k = counts.shape[0]
    tp = counts.diagonal()
    gt = counts.sum(1)  # pixels of each class in the ground truth (tp + fn)
    pred = counts.sum(0)  # pixels predicted as each class (tp + fp)
    union = gt + pred - tp
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    dice = torch.where(gt + pred > 0, 2 * tp / (gt + pred).clamp(min=1), nan)
    accuracy = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = counts.sum()
    return Metrics(
        miou=_nanmean(iou),
        per_class_iou=iou.tolist(),
        pixel_accuracy=float(tp.sum() / total) if total > 0 else math.nan,
        mean_accuracy=_nanmean(accuracy),
        per_class_accuracy=accuracy.tolist(),
        dice=_nanmean(dice),
        per_class_dice=dice.tolist(),
        classes=list(classes) if classes else [f"class_{i}" for i in range(k)],
        pixels=int(total),
        confusion_matrix=matrix.detach().to("cpu", torch.int64).tolist(),
    )


def format_table(metrics: Metrics) -> str:
    """A per-class table (IoU, Dice, accuracy, pixel share) and the summary line."""
    matrix = torch.tensor(metrics.confusion_matrix, dtype=torch.float64)
    share = matrix.sum(1) / max(metrics.pixels, 1)
    width = max(12, *(len(c) for c in metrics.classes))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'GT px':>7}"]

    def num(value: float) -> str:
        return "    n/a" if math.isnan(value) else f"{value:7.4f}"

    for i, name in enumerate(metrics.classes):
        lines.append(
            f"{name:<{width}}  {num(metrics.per_class_iou[i])}  {num(metrics.per_class_dice[i])}"
            f"  {num(metrics.per_class_accuracy[i])}  {100 * float(share[i]):6.2f}%"
        )
    lines.append(
        f"{'mean':<{width}}  {num(metrics.miou)}  {num(metrics.dice)}  {num(metrics.mean_accuracy)}"
    )
    lines.append(
        f"mIoU {metrics.miou:.4f}  pixel accuracy {metrics.pixel_accuracy:.4f}  "
        f"mean accuracy {metrics.mean_accuracy:.4f}  mean Dice {metrics.dice:.4f}  "
        f"({metrics.pixels} pixels)"
    )
    return "\n".join(lines)
