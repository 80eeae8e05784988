"""Model registry: ``register_model``, ``list_models`` and ``build_model``.

Builders are plain functions taking keyword-only ``num_classes``, ``in_channels`` and their own
options. ``build_model`` validates names and options against the builder's signature, so a
typo fails with the list of what is valid instead of a ``TypeError`` deep inside a constructor.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}
# Modules whose import registers the built-in models (kept lazy to avoid import cycles).
_BUILTIN_MODULES = ("fcn.vgg", "fcn.smp")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS and _MODELS[name] is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = builder
        return builder

    return decorator


def _ensure_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _ensure_builtins()
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts besides num_classes/in_channels, with their defaults."""
    builder = _get_builder(name)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.name not in ("num_classes", "in_channels") and p.kind is p.KEYWORD_ONLY
    }


def _get_builder(name: str) -> ModelBuilder:
    _ensure_builtins()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(sorted(_MODELS))}"
        ) from None


def build_model(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output channels (classes), >= 1.
        in_channels: number of input channels, >= 1.
        **options: model-specific options; see :func:`model_options`.

    Returns:
        A module mapping ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``
        for any ``H, W >= 1``.

    Raises:
        ValueError: unknown name or option, or an invalid value.
    """
    builder = _get_builder(name)
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )
    return builder(num_classes=num_classes, in_channels=in_channels, **options)
