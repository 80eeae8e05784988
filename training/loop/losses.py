"""Segmentation losses: cross-entropy with an ignore index, optionally plus an overlap loss.

``ce+dice`` adds smp's multiclass soft Dice (computed over the whole batch, ignored pixels
masked out) to the cross-entropy. Dice optimises overlap directly, which helps thin or rare
classes (membranes in EM) that pixel-wise cross-entropy under-weights. ``ce+lovasz`` adds
smp's Lovasz-softmax instead, a surrogate of the IoU itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import nn

from training.config import LOSSES


class CrossEntropyPlus(nn.Module):
    """``ce(logits, target) + overlap(logits, target)``."""

    def __init__(self, ce: nn.CrossEntropyLoss, overlap: nn.Module) -> None:
        super().__init__()
        self.ce = ce
        self.overlap = overlap

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.overlap(logits, target)


def build_loss(
    name: str,
    *,
    num_classes: int,
    ignore_index: int,
    class_weights: Sequence[float] | None = None,
) -> nn.Module:
    """Build the training loss.

    Args:
        name: one of ``training.config.LOSSES``.
        num_classes: number of classes (checks ``class_weights``).
        ignore_index: target value that contributes nothing.
        class_weights: optional cross-entropy weight per class.

    Returns:
        A module ``loss(logits (N, C, H, W), target (N, H, W) int64) -> scalar``.

    Raises:
        ValueError: unknown name or wrong number of class weights.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid ones: {', '.join(LOSSES)}")
    weight = None
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights needs one value per class ({num_classes}), got {len(class_weights)}"
            )
        weight = torch.tensor([float(w) for w in class_weights])
    ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
    if name == "ce":
        return ce
    if name == "ce+lovasz":
        return CrossEntropyPlus(ce, LovaszLoss("multiclass", ignore_index=ignore_index))
    return CrossEntropyPlus(ce, DiceLoss("multiclass", ignore_index=ignore_index))
