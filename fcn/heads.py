"""Score layers and bilinear-initialised upsampling used by the FCN heads."""

from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``(channels, channels, k, k)`` making a transposed convolution upsample each
    channel bilinearly and independently (zero off the diagonal).

    With stride ``s`` and ``k == 2 * s`` this is exact bilinear interpolation by ``s``.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    kernel2d = (taps[:, None] * taps[None, :]).to(torch.float32)
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    index = torch.arange(channels)
    weight[index, index] = kernel2d
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """Transposed convolution initialised to bilinear upsampling by ``factor``.

    Args:
        channels: input and output channels (one filter per class).
        factor: upsampling stride.
        kernel_size: defaults to ``2 * factor``.
        trainable: if False the weights stay bilinear (``requires_grad=False``).
    """

    def __init__(
        self, channels: int, factor: int, kernel_size: int | None = None, trainable: bool = True
    ) -> None:
        kernel_size = kernel_size or 2 * factor
        super().__init__(channels, channels, kernel_size, stride=factor, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, kernel_size))
        self.weight.requires_grad_(trainable)


def score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1x1 class-scoring convolution, zero-initialised as in Long et al. (2015): a new head
    starts by predicting nothing, so early training does not disturb the pretrained trunk."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
