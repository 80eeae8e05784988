"""Pad-to-multiple and crop, so that any input size works with any backbone.

The rule (shared with the serving engine, which applies it in numpy; see
docs/contracts.md): pad the bottom and right edges only, up to the next multiple; on each axis
use reflection when the pad is smaller than that side (reflection needs a neighbour to mirror),
otherwise repeat the edge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_amount(size: int, multiple: int) -> int:
    """Pixels to add so that ``size`` becomes a multiple of ``multiple``."""
    return (-size) % multiple


def pad_mode(size: int, pad: int) -> str:
    """``reflect`` when a reflection fits in ``size`` pixels, else ``replicate``."""
    return "reflect" if pad < size else "replicate"


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad an ``(N, C, H, W)`` tensor at the bottom and right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = pad_amount(h, multiple), pad_amount(w, multiple)
    # Each axis separately: reflect may be valid on one axis and not the other.
    if ph:
        x = F.pad(x, (0, 0, 0, ph), mode=pad_mode(h, ph))
    if pw:
        x = F.pad(x, (0, pw, 0, 0), mode=pad_mode(w, pw))
    return x


class PadCrop(nn.Module):
    """Run ``net`` on the input padded to a multiple of ``multiple``, crop logits back.

    Args:
        net: a module whose input H and W must be multiples of ``multiple`` and which returns
            logits at its input resolution.
        multiple: the size multiple ``net`` needs (e.g. 32, its output stride).
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        if multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        self.net = net
        self.size_multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.size_multiple))[..., :h, :w]


def unwrap(model: nn.Module) -> tuple[nn.Module, int]:
    """Return ``(graph, size_multiple)``: the module to export and the multiple it needs.

    For a :class:`PadCrop` the graph is the inner net and the caller (the serving engine) must
    pad with the same rule; every other model takes any size (multiple 1).
    """
    if isinstance(model, PadCrop):
        return model.net, model.size_multiple
    return model, int(getattr(model, "size_multiple", 1))
