"""Flip test-time augmentation: the mean of the logits of an image and of its mirror image.

``with_flip_tta(model)`` puts the averaging inside a :class:`fcn.padding.PadCrop`, so the
padding rule stays outside it and the exported graph (the inner module) is exactly what the
serving engine runs after padding: a flip-averaged export predicts like its torch original.
"""

from __future__ import annotations

import torch
from torch import nn

from fcn.padding import PadCrop
from training.config import TTA_MODES


class FlipAverage(nn.Module):
    """``(net(x) + mirror(net(mirror(x)))) / 2`` with ``mirror`` the left-right flip."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mirrored = self.net(torch.flip(x, dims=(-1,)))
        return (self.net(x) + torch.flip(mirrored, dims=(-1,))) * 0.5


def with_flip_tta(model: nn.Module, mode: str = "hflip") -> nn.Module:
    """``model`` predicting with test-time augmentation ``mode`` (one of ``TTA_MODES``).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    if mode == "none":
        return model
    if isinstance(model, PadCrop):
        return PadCrop(FlipAverage(model.net), model.size_multiple).eval()
    return FlipAverage(model).eval()
