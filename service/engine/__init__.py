"""The inference engine: an ONNX model loaded on a backend, with padding, tiling and argmax.

:class:`Engine` (:mod:`~service.engine.engine`) runs a model with the settings in
:class:`EngineConfig` (:mod:`~service.engine.config`); images larger than the configured
threshold go through :mod:`~service.engine.tiling`. The names below are the package's API.
"""

from service.engine.config import EngineConfig
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
