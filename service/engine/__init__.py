"""The inference engine: an ONNX model loaded on a backend, with padding, tiling and argmax.

:class:`Engine` (:mod:`~service.engine.engine`) runs a model with the settings in
:class:`EngineConfig` (:mod:`~service.engine.config`); images larger than the configured
threshold go through :mod:`~service.engine.tiling`. The names below are the package's API.

The engine's names are loaded on first use (PEP 562): the commands read
:mod:`service.engine.config` to build their ``--help`` and must not load ONNX Runtime for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from service.engine.config import EngineConfig

if TYPE_CHECKING:
    from service.engine.engine import (
        Engine,
        argmax_classes,
        argmax_confidence,
        pad_to_multiple,
        read_model_metadata,
    )

__all__ = [
    "Engine",
    "EngineConfig",
    "argmax_classes",
    "argmax_confidence",
    "pad_to_multiple",
    "read_model_metadata",
]
_FROM_ENGINE = frozenset(__all__) - {"EngineConfig"}


def __getattr__(name: str) -> Any:
    if name in _FROM_ENGINE:
        return getattr(importlib.import_module("service.engine.engine"), name)
    raise AttributeError(f"module 'service.engine' has no attribute {name!r}")
