"""Inference backends: what runs a model file, below the engine's pad/crop/tiling/normalise.

A backend loads one ``.onnx`` file at one precision, runs a ``float32 (N, C, H, W)`` batch and
says what it runs on. Two exist:

* ``ort``: ONNX Runtime (CPU, or CUDA through ``EngineConfig.providers``); ``fp32`` and the
  exported ``int8`` (QDQ) file. The default path.
* ``openvino``: the OpenVINO runtime reading the same file (optional extra
  ``fcnseg[openvino]``, imported only when used); ``fp32``, ``bf16`` (on CPUs with native bf16:
  AVX512-BF16 or AMX) and the same ``int8`` file.

Which backend and precision serve a model is decided by :func:`service.backends.select.choose_backend`
from the config and the accuracy checks ``fcn export`` recorded in the model's metadata.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from service.backends.cpu import cpu_has_bf16
from service.errors import ModelLoadError

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "check_backend",
    "check_precision",
    "cpu_has_bf16",
    "load_backend",
    "openvino_available",
]

BACKENDS: tuple[str, ...] = ("auto", "ort", "openvino")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")


class Backend(Protocol):
    """One loaded model file, ready to run batches."""

    name: str  # "ort" or "openvino"
    precision: str  # "fp32", "bf16" or "int8": what actually runs
    path: Path
    input_name: str
    input_shape: list  # (N, C, H, W); symbolic dims as str or None
    output_shape: list
    metadata_props: dict[str, str]  # the file's raw metadata_props

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``float32 (N, C, H, W)`` (already padded) -> ``float32 (N, K, H, W)`` logits."""
        ...

    @property
    def providers(self) -> list[str]:
        """What it runs on: ORT execution providers, or ``["openvino:CPU"]``."""
        ...


def check_backend(name: str) -> str:
    """``name`` if it is a backend name, else ``ValueError`` naming the valid ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return name


def check_precision(name: str) -> str:
    """``name`` if it is a precision name, else ``ValueError`` naming the valid ones."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid precisions: {', '.join(PRECISIONS)}")
    return name


def openvino_available() -> bool:
    """Whether the ``openvino`` runtime is installed (``pip install fcnseg[openvino]``)."""
    return importlib.util.find_spec("openvino") is not None


def openvino_missing() -> ModelLoadError:
    """The error for asking for the openvino backend where it is not installed."""
    return ModelLoadError(
        "backend 'openvino' needs the openvino runtime: pip install 'fcnseg[openvino]'"
    )


def load_backend(name: str, path: Path, precision: str, config: object) -> Backend:
    """Load ``path`` with backend ``name`` (``ort``/``openvino``) at a concrete precision.

    Raises:
        ModelLoadError: the file is missing or the runtime rejects it (or is not installed),
            or its external data lies outside its folder.
    """
    # Each backend checks the file's external data before its runtime reads it.
    if name == "ort":
        from service.backends.ort import OrtBackend

        return OrtBackend(path, precision, config)
    if name == "openvino":
        from service.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(path, precision, config)
    check_backend(name)
    raise ValueError(f"backend {name!r} must be resolved before loading")
