"""Pretrained weights: torchvision's VGG16 ImageNet weights or a local state-dict file.

Downloads go through torchvision's weights API (cached by torch.hub). Offline, the download
fails with :class:`WeightsUnavailableError` after a bounded wait instead of hanging, and the
message says how to use a local file instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

# A download that has not answered within this many seconds is treated as offline.
DOWNLOAD_TIMEOUT_S = 30.0

WeightsArg = str | os.PathLike | None


class WeightsUnavailableError(OSError):
    """Pretrained weights could not be obtained (offline, or the file is missing)."""


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib (used by torch.hub) opens connections without a timeout; a blocked network
    # would otherwise hang forever.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_guard(what: str, hint: str) -> contextlib.AbstractContextManager:
    """Context manager turning any download failure into :class:`WeightsUnavailableError`."""

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                yield
        except WeightsUnavailableError:
            raise
        except Exception as exc:
            raise WeightsUnavailableError(
                f"could not download {what} ({type(exc).__name__}: {exc}). Are you offline? {hint}"
            ) from exc

    return guard()


def imagenet_vgg16_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's VGG16 ImageNet-1k weights (downloaded once, then cached)."""
    from torchvision.models import VGG16_Weights

    with download_guard(
        "torchvision's VGG16 ImageNet weights",
        "Pass weights=<path to a torchvision VGG16 state dict> to load them from disk, "
        "or weights=None to start from random initialisation.",
    ):
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (``weights_only=True``).

    Accepts a bare state dict or a dict with a ``state_dict`` / ``model`` entry.

    Raises:
        WeightsUnavailableError: the file does not exist.
        ValueError: the file is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch state dict: {exc}") from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path} does not contain a state dict of tensors")
    return dict(state)


def resolve_vgg16_weights(weights: WeightsArg) -> dict[str, torch.Tensor] | None:
    """``None`` -> None, ``"imagenet"`` -> torchvision's weights, a path -> that file."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return imagenet_vgg16_state_dict()
    return load_state_dict_file(weights)


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution weight ``(out, 3, k, k)`` trained on RGB to ``in_channels``.

    One channel: the sum over RGB (a grey image then excites each filter as the same image in
    colour would). Otherwise the RGB filters are repeated cyclically and rescaled by
    ``3 / in_channels`` so activations keep their magnitude.
    """
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)
