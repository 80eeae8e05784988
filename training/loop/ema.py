"""An exponential moving average of the weights (torch's ``AveragedModel``).

Validation, ``best.pt`` and everything built from a checkpoint (evaluate, export) use the
averaged weights; the optimizer keeps stepping the raw ones. The average includes the
BatchNorm running statistics, so the averaged network is consistent on its own.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates ``n``, so a
short run is not dominated by the random initial weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (0-based)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An ``AveragedModel`` of ``model`` (parameters and buffers) with a warmed-up decay."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema decay must be in (0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor):
        weight = 1.0 - warmed_decay(decay, int(updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the model
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
