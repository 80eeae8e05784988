"""BatchNorm that an export folded into the convolution before it.

Exporters (torch.export's optimiser, ONNX Runtime's quantisation pre-processing) fold an
inference-mode ``BatchNorm(conv(x))`` into one convolution ``W' x + b'``. Only ``W'`` and ``b'``
survive, so the torch model gets ``W'`` as its convolution weight and a BatchNorm that adds
``b'`` and nothing else: weight 1, bias ``b'``, running mean 0, running variance ``1 - eps``
(``(x - 0) / sqrt(1 - eps + eps) * 1 + b' = x + b'``). That reproduces the exported function in
eval mode.

In training mode a BatchNorm normalises with the batch's own statistics; with the identity
parameters above it would rescale every channel to unit variance and change the function the
fine-tune starts from. :func:`calibrate` therefore measures each folded BatchNorm's input mean
``m`` and variance ``v`` on training images and sets running mean ``m``, running variance ``v``,
weight ``sqrt(v + eps)`` and bias ``m + b'``: still ``x + b'`` in eval mode, and about the same
in training mode, where the batch statistics are close to ``m`` and ``v``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

CONVS = (nn.Conv2d, nn.ConvTranspose2d)
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def trace_modules(
    model: nn.Module, in_channels: int, size: int = 64
) -> tuple[list[str], dict[str, str]]:
    """Run one small input through ``model`` (eval mode) and record two things.

    Returns:
        ``(convs, follows)``: the convolutions' names in the order they run, and for each
        BatchNorm that reads a convolution's output directly, ``{bn name: conv name}``.
    """
    outputs: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # holds outputs so their ids are not reused during the pass
    order: list[str] = []
    follows: dict[str, str] = {}
    handles = []

    def conv_hook(name: str):
        def hook(_module, _inputs, output):
            order.append(name)
            outputs[id(output)] = name
            keep.append(output)

        return hook

    def norm_hook(name: str):
        def hook(_module, inputs):
            source = outputs.get(id(inputs[0]))
            if source is not None:
                follows[name] = source

        return hook

    for name, module in model.named_modules():
        if isinstance(module, CONVS):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, NORMS):
            handles.append(module.register_forward_pre_hook(norm_hook(name)))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    unique = list(dict.fromkeys(order))  # a module run twice (shared weights) counts once
    return unique, follows


def identity_state(channels: int, eps: float, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """BatchNorm parameters that compute ``x + bias`` in eval mode (``bias`` None: zero)."""
    return {
        "weight": torch.ones(channels),
        "bias": bias.clone() if bias is not None else torch.zeros(channels),
        "running_mean": torch.zeros(channels),
        "running_var": torch.full((channels,), 1.0 - eps),
    }


# The norm each output channel's folded weights are rescaled to: a He-initialised channel's
# (weight variance 2 / fan_in over fan_in weights), the scale the optimiser's defaults suit.
CHANNEL_NORM = 2.0**0.5


def _channel_norms(conv: nn.Module) -> torch.Tensor:
    weight = conv.weight.detach().double()
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    dims = [d for d in range(weight.dim()) if d != out_dim]
    return weight.pow(2).sum(dims).sqrt()


def _rescale(conv: nn.Module, ratio: torch.Tensor) -> None:
    shape = [1] * conv.weight.dim()
    shape[1 if isinstance(conv, nn.ConvTranspose2d) else 0] = -1
    conv.weight.mul_(ratio.reshape(shape).to(conv.weight.dtype))


@torch.no_grad()
def calibrate(
    model: nn.Module, folded: list[tuple[nn.Module, nn.Module]], batches: Iterable[torch.Tensor]
) -> int:
    """Give each folded ``(convolution, BatchNorm)`` pair of ``model`` the parametrisation of a
    trained pair, measured on ``batches``.

    Folding left each channel's scale ``γ/σ`` in the convolution's weights, so their norms
    differ by orders of magnitude between channels, and an optimiser that moves every weight
    by about the learning rate (Adam) would wreck the small ones in a few steps. So each
    channel's weights are rescaled by ``r = CHANNEL_NORM / norm`` and the BatchNorm takes the
    scale back: with ``m``, ``v`` the folded output's measured mean and variance, running mean
    ``r m``, running variance ``r² v``, weight ``sqrt(r² v + eps) / r``, bias ``m + b'``. In eval
    mode that is exactly ``W' x + b'`` again; in training mode about the same, the batch
    statistics being close to the measured ones.

    Returns:
        the number of images measured (0: nothing changed).
    """
    sums: dict[int, list[torch.Tensor]] = {id(norm): [] for _, norm in folded}
    handles = []

    def record(module, inputs):
        x = inputs[0].detach().double()
        dims = (0, 2, 3)
        sums[id(module)].append(torch.stack([x.mean(dims), (x * x).mean(dims)]))

    for _, norm in folded:
        handles.append(norm.register_forward_pre_hook(record))
    training = model.training
    images = 0
    try:
        model.eval()
        for batch in batches:
            model(batch)
            images += batch.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    if not images:
        return 0
    for conv, norm in folded:
        first, second = torch.stack(sums[id(norm)]).mean(0)
        var = (second - first * first).clamp_min(0.0)
        norms = _channel_norms(conv)
        ratio = torch.where(
            norms > 0, CHANNEL_NORM / norms.clamp_min(1e-30), torch.ones_like(norms)
        )
        shift = norm.bias.detach().double()  # b', the folded bias
        _rescale(conv, ratio)
        norm.running_mean.copy_(ratio * first)
        norm.running_var.copy_(ratio * ratio * var)
        norm.weight.copy_(torch.sqrt(ratio * ratio * var + norm.eps) / ratio)
        norm.bias.copy_(first + shift)
    return images
