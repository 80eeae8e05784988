"""The segmentation-models-pytorch architectures: U-Net, U-Net++, FPN, LinkNet, MA-Net,
DeepLabV3+, with any smp encoder by name.

smp networks need H and W divisible by their encoder's output stride; the builders wrap them
in :class:`fcn.padding.PadCrop` so they accept any size. ``encoder_weights`` defaults to
``None`` (smp's own default, ``"imagenet"``, downloads): pass ``"imagenet"`` to download, or
the path of an encoder state dict saved with ``torch.save``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
from torch import nn

from fcn.padding import PadCrop
from fcn.registry import register_model
from fcn.weights import adapt_input_channels, download_guard, load_state_dict_file

# smp's prefix for its timm-universal encoders: ``tu-<timm model name>`` (e.g.
# ``tu-mobilenetv3_small_100``), built by timm with ``features_only=True``.
TIMM_PREFIX = "tu-"


def _load_encoder_file(encoder: nn.Module, path: str | os.PathLike, in_channels: int) -> None:
    state = load_state_dict_file(path)
    own = encoder.state_dict()
    for key, value in state.items():
        target = own.get(key)
        # A 3-channel stem loaded into a model for other inputs: adapt like the VGG trunk.
        if (
            target is not None
            and value.ndim == 4
            and target.shape[1] == in_channels
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            state[key] = adapt_input_channels(value, in_channels)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"encoder weights in {path} do not fit this encoder: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(mismatched)} of the wrong shape (e.g. {mismatched[:3]})"
        )
    encoder.load_state_dict(state)


def _check_encoder(encoder: str) -> None:
    """Accept smp's own encoder names and ``tu-<timm model>`` (smp's timm-universal encoders).

    Raises:
        ValueError: neither, with similar names.
    """
    if encoder.startswith(TIMM_PREFIX):
        import timm

        name = encoder.removeprefix(TIMM_PREFIX)
        if name and timm.is_model(name):
            return
        close = timm.list_models(f"*{name[:6]}*")[:10] if name else []
        raise ValueError(
            f"unknown timm model {name!r} in encoder {encoder!r}; similar timm names: {close} "
            "(all: timm.list_models())"
        )
    valid = smp.encoders.get_encoder_names()
    if encoder not in valid:
        close = [n for n in valid if n.startswith(encoder[:4])][:10]
        raise ValueError(
            f"unknown smp encoder {encoder!r}; similar names: {close or valid[:10]} "
            f"(all: segmentation_models_pytorch.encoders.get_encoder_names(), or "
            f"{TIMM_PREFIX}<any timm model with features_only>)"
        )


def build_smp(
    arch: str,
    num_classes: int,
    in_channels: int,
    encoder: str,
    encoder_weights: str | None,
    **decoder: Any,
) -> PadCrop:
    """Build an smp architecture wrapped to accept any input size.

    ``decoder`` holds the architecture's own decoder options (e.g. U-Net's
    ``decoder_channels``), passed to smp only when given.

    Raises:
        ValueError: unknown encoder, or weights that do not fit.
        fcn.weights.WeightsUnavailableError: ``"imagenet"`` weights could not be downloaded.
    """
    _check_encoder(encoder)
    is_file = encoder_weights is not None and Path(encoder_weights).suffix in {".pt", ".pth"}
    download = None if (encoder_weights is None or is_file) else encoder_weights
    # Only a real download is guarded: any other failure must surface as itself.
    guard = (
        download_guard(
            f"{download!r} weights for encoder {encoder!r}",
            "Pass encoder_weights=<path to an encoder state dict (.pt/.pth)>, or None.",
        )
        if download is not None
        else contextlib.nullcontext()
    )
    with guard:
        net = smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=download,
            in_channels=in_channels,
            classes=num_classes,
            **{key: value for key, value in decoder.items() if value is not None},
        )
    if is_file:
        _load_encoder_file(net.encoder, encoder_weights, in_channels)
    multiple = int(getattr(net.encoder, "output_stride", 32))
    return PadCrop(net, multiple)


# Each builder: smp's architecture of that name, any smp encoder (default resnet34), no
# pretrained weights unless ``encoder_weights`` asks for them.


@register_model("unet")
def unet(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    decoder_channels: list[int] | None = None,
) -> PadCrop:
    """smp ``unet`` wrapped in PadCrop (any input size).

    ``decoder_channels``: the width of each of the five decoder stages, deepest first (smp's
    default: 256, 128, 64, 32, 16); e.g. ``[128, 64, 32, 16, 8]`` trains faster, and scored
    lower on thin classes in short runs (measured in docs/benchmarks.md).
    """
    if decoder_channels is not None:
        given = decoder_channels
        ok = isinstance(given, (list, tuple)) and len(given) == 5
        ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in given)
        if not ok:
            raise ValueError(
                f"decoder_channels must be five positive widths, deepest first, e.g. "
                f"[128, 64, 32, 16, 8]; got {given!r}"
            )
        decoder_channels = list(given)
    return build_smp(
        "unet",
        num_classes,
        in_channels,
        encoder,
        encoder_weights,
        decoder_channels=decoder_channels,
    )


@register_model("unetplusplus")
def unetplusplus(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
) -> PadCrop:
    """smp ``unetplusplus`` wrapped in PadCrop (any input size)."""
    return build_smp("unetplusplus", num_classes, in_channels, encoder, encoder_weights)


@register_model("fpn")
def fpn(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
) -> PadCrop:
    """smp ``fpn`` wrapped in PadCrop (any input size)."""
    return build_smp("fpn", num_classes, in_channels, encoder, encoder_weights)


@register_model("linknet")
def linknet(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
) -> PadCrop:
    """smp ``linknet`` wrapped in PadCrop (any input size)."""
    return build_smp("linknet", num_classes, in_channels, encoder, encoder_weights)


@register_model("manet")
def manet(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
) -> PadCrop:
    """smp ``manet`` wrapped in PadCrop (any input size)."""
    return build_smp("manet", num_classes, in_channels, encoder, encoder_weights)


@register_model("deeplabv3plus")
def deeplabv3plus(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
) -> PadCrop:
    """smp ``deeplabv3plus`` wrapped in PadCrop (any input size)."""
    return build_smp("deeplabv3plus", num_classes, in_channels, encoder, encoder_weights)


__all__ = [
    "TIMM_PREFIX",
    "build_smp",
    "deeplabv3plus",
    "fpn",
    "linknet",
    "manet",
    "unet",
    "unetplusplus",
]
