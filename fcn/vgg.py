"""VGG16 made fully convolutional, and FCN-32s/16s/8s (Long, Shelhamer & Darrell, 2015).

``convolutionalize`` turns a torchvision VGG16 classifier into a network of convolutions that
computes the same scores: fc6 becomes a 7x7 convolution over pool5, fc7 and fc8 1x1
convolutions, with the weights copied by reshaping.

The FCN models follow the paper's reference networks: the first convolution pads by 100 pixels
and pooling rounds up (``ceil_mode``), so any input of at least 1x1 reaches fc6 with a 7x7
pool5; the score maps are cropped back into alignment with fixed offsets (5 and 9 for the
pool4/pool3 skips; 19, 27 and 31 for the final 32x, 16x and 8x upsampling, the values of the
paper's Caffe definitions). The output therefore has exactly the input's H and W.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Literal

import torch
from torch import nn
from torchvision.models import VGG, vgg16
from torchvision.models.vgg import cfgs, make_layers

from fcn.heads import BilinearUpsample, score_layer
from fcn.registry import register_model
from fcn.weights import WeightsArg, adapt_input_channels, resolve_vgg16_weights

# Split points in torchvision's vgg16().features: [:17] ends at pool3, [17:24] at pool4.
_POOL3_END, _POOL4_END = 17, 24


def _linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """A convolution computing ``linear`` at every ``kernel_size`` window.

    torchvision flattens pool5 as (C, H, W), so the Linear's input axis reshapes to exactly
    the (in_channels, k, k) layout of a convolution filter.
    """
    out_features, in_features = linear.weight.shape
    expected = in_channels * kernel_size * kernel_size
    if in_features != expected:
        raise ValueError(
            f"cannot reshape a Linear with {in_features} inputs into a {kernel_size}x{kernel_size}"
            f" convolution over {in_channels} channels (expected {expected} inputs)"
        )
    # Built on the meta device: no random init of a 100M-weight fc6 that is replaced anyway.
    conv = nn.Conv2d(in_channels, out_features, kernel_size, device="meta")
    weight = linear.weight.detach().reshape(out_features, in_channels, kernel_size, kernel_size)
    conv.weight = nn.Parameter(weight.clone())
    conv.bias = nn.Parameter(linear.bias.detach().clone())
    return conv


def convolutionalize(vgg: VGG) -> nn.Sequential:
    """Turn a torchvision VGG16 (with its classifier) into a fully convolutional network.

    Args:
        vgg: ``torchvision.models.vgg16(...)``; its weights are copied, not shared.

    Returns:
        ``nn.Sequential`` of ``features``, ``fc6`` (7x7 conv, 4096 filters), ``relu6``,
        ``drop6``, ``fc7`` (1x1), ``relu7``, ``drop7``, ``fc8`` (1x1). On a 224x224 input its
        1x1 output equals ``vgg(x)``; on larger inputs cell (i, j) holds the classifier applied
        to the 7x7 pool5 window at (i, j), i.e. to the input window at (32i, 32j).

    Raises:
        ValueError: ``vgg`` does not have VGG16's classifier layout.
    """
    classifier = list(vgg.classifier)
    linears = [m for m in classifier if isinstance(m, nn.Linear)]
    if len(classifier) != 7 or len(linears) != 3:
        raise ValueError(
            "expected a torchvision VGG classifier of 7 modules with 3 Linear layers, got "
            f"{[type(m).__name__ for m in classifier]}"
        )
    fc6, fc7, fc8 = linears
    channels = [m for m in vgg.features if isinstance(m, nn.Conv2d)][-1].out_channels
    return nn.Sequential(
        OrderedDict(
            features=copy.deepcopy(vgg.features),
            fc6=_linear_to_conv(fc6, channels, 7),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout2d(classifier[2].p),
            fc7=_linear_to_conv(fc7, fc6.out_features, 1),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout2d(classifier[5].p),
            fc8=_linear_to_conv(fc8, fc7.out_features, 1),
        )
    )


Variant = Literal["32s", "16s", "8s"]
# Crop offsets of the paper's reference networks (see module docstring).
_SKIP_OFFSET = {"pool4": 5, "pool3": 9}
_FINAL_OFFSET = {"32s": 19, "16s": 27, "8s": 31}


class FCN(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s on a convolutionalized VGG16 trunk.

    Args:
        num_classes: classes to score.
        variant: ``"32s"``, ``"16s"`` or ``"8s"`` (skips from pool4, then pool3).
        in_channels: input channels.
        freeze_upsampling: keep every upsampling layer fixed at bilinear interpolation.
        dropout: dropout after fc6 and fc7.
    """

    size_multiple = 1

    def __init__(
        self,
        num_classes: int,
        variant: Variant = "8s",
        in_channels: int = 3,
        freeze_upsampling: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if variant not in _FINAL_OFFSET:
            raise ValueError(f"variant must be one of {sorted(_FINAL_OFFSET)}, got {variant!r}")
        self.variant = variant
        features = make_layers(cfgs["D"])  # VGG16's trunk, without its 120M-weight classifier
        features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=100)
        for module in features:
            if isinstance(module, nn.MaxPool2d):
                module.ceil_mode = True
        self.features = features
        self.fc6 = nn.Conv2d(512, 4096, kernel_size=7)
        self.fc7 = nn.Conv2d(4096, 4096, kernel_size=1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = score_layer(4096, num_classes)
        trainable = not freeze_upsampling
        if variant == "32s":
            self.upscore = BilinearUpsample(num_classes, 32, trainable=trainable)
        else:
            self.upscore2 = BilinearUpsample(num_classes, 2, trainable=trainable)
            self.score_pool4 = score_layer(512, num_classes)
            if variant == "16s":
                self.upscore = BilinearUpsample(num_classes, 16, trainable=trainable)
            else:
                self.upscore_pool4 = BilinearUpsample(num_classes, 2, trainable=trainable)
                self.score_pool3 = score_layer(256, num_classes)
                self.upscore = BilinearUpsample(num_classes, 8, trainable=trainable)

    @staticmethod
    def _crop(x: torch.Tensor, offset: int, like: torch.Tensor | tuple[int, int]) -> torch.Tensor:
        h, w = like.shape[-2:] if isinstance(like, torch.Tensor) else like
        return x[..., offset : offset + h, offset : offset + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pool3 = self.features[:_POOL3_END](x)
        pool4 = self.features[_POOL3_END:_POOL4_END](pool3)
        pool5 = self.features[_POOL4_END:](pool4)
        h = self.drop(torch.relu(self.fc6(pool5)))
        h = self.drop(torch.relu(self.fc7(h)))
        score = self.score_fr(h)
        if self.variant != "32s":
            score = self.upscore2(score)
            score = score + self._crop(self.score_pool4(pool4), _SKIP_OFFSET["pool4"], score)
            if self.variant == "8s":
                score = self.upscore_pool4(score)
                score = score + self._crop(self.score_pool3(pool3), _SKIP_OFFSET["pool3"], score)
        return self._crop(self.upscore(score), _FINAL_OFFSET[self.variant], size)

    def load_vgg16(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a torchvision VGG16 state dict into the trunk (features, fc6, fc7).

        fc6 and fc7 become convolutions through :func:`convolutionalize`; the first
        convolution is adapted to this model's input channels; fc8 (the 1000 ImageNet
        classes) is not used: the score layers are new.

        Raises:
            ValueError: a tensor is missing or has the wrong shape (names it, with both shapes).
        """
        trunk = convolutionalize(_vgg16_from_state_dict(state_dict))
        first = trunk.features[0].weight
        with torch.no_grad():
            trunk.features[0].weight = nn.Parameter(
                adapt_input_channels(first, self.features[0].in_channels)
            )
        mapped = {f"features.{k}": v for k, v in trunk.features.state_dict().items()}
        for name in ("fc6", "fc7"):
            mapped.update({f"{name}.{k}": v for k, v in getattr(trunk, name).state_dict().items()})
        self.load_state_dict(mapped, strict=False)


def _vgg16_from_state_dict(state_dict: dict[str, torch.Tensor]) -> VGG:
    """A torchvision VGG16 holding ``state_dict`` (the first convolution may have any number of
    input channels; fc8 may be absent: it stays on the meta device, unused).

    Raises:
        ValueError: a tensor is missing or has the wrong shape (names it, with both shapes).
    """
    with torch.device("meta"):  # no random init: every used weight is replaced
        vgg = vgg16(weights=None)
    first = state_dict.get("features.0.weight")
    if first is not None and first.ndim == 4 and first.shape[0] == 64 and first.shape[1] != 3:
        vgg.features[0] = nn.Conv2d(first.shape[1], 64, kernel_size=3, padding=1, device="meta")
    used = {}
    for key, target in vgg.state_dict().items():
        if key.startswith("classifier.6."):
            if key in state_dict:
                used[key] = state_dict[key]
            continue
        if key not in state_dict:
            raise ValueError(
                f"VGG16 weights have no {key!r}; expected a torchvision VGG16 state dict"
            )
        value = state_dict[key]
        if value.shape != target.shape:
            expected = "(64, C, 3, 3)" if key == "features.0.weight" else tuple(target.shape)
            raise ValueError(
                f"VGG16 weight {key!r} has shape {tuple(value.shape)}, expected {expected}; "
                "is this a VGG16 state dict?"
            )
        used[key] = value
    vgg.load_state_dict(used, strict=False, assign=True)
    return vgg


def _fcn(
    variant: Variant,
    num_classes: int,
    in_channels: int,
    weights: WeightsArg,
    freeze_upsampling: bool,
    dropout: float,
) -> FCN:
    model = FCN(num_classes, variant, in_channels, freeze_upsampling, dropout)
    state_dict = resolve_vgg16_weights(weights)
    if state_dict is not None:
        model.load_vgg16(state_dict)
    return model


# ``weights``: None, ``"imagenet"`` (torchvision's VGG16) or the path of a torchvision-format
# VGG16 state dict; see fcn.weights.


@register_model("fcn32s")
def fcn32s(
    *,
    num_classes: int,
    in_channels: int = 3,
    weights: WeightsArg = None,
    freeze_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-32s: one 32x upsampling of the fc7 scores."""
    return _fcn("32s", num_classes, in_channels, weights, freeze_upsampling, dropout)


@register_model("fcn16s")
def fcn16s(
    *,
    num_classes: int,
    in_channels: int = 3,
    weights: WeightsArg = None,
    freeze_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-16s: fused with a skip from pool4."""
    return _fcn("16s", num_classes, in_channels, weights, freeze_upsampling, dropout)


@register_model("fcn8s")
def fcn8s(
    *,
    num_classes: int,
    in_channels: int = 3,
    weights: WeightsArg = None,
    freeze_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-8s: fused with skips from pool4 and pool3."""
    return _fcn("8s", num_classes, in_channels, weights, freeze_upsampling, dropout)
