"""The ONNX Runtime backend: today's default path (CPU, or CUDA through the providers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import ModelLoadError


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*preferred, "CPUExecutionProvider"]


def create_session(path: str | os.PathLike, config: Any) -> ort.InferenceSession:
    """Build an ONNX Runtime session with the configured providers and thread counts.

    Raises:
        ModelLoadError: the file is missing or ONNX Runtime rejects it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    providers = list(config.providers) if config.providers else default_providers()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc


class OrtBackend:
    """An ONNX Runtime session behind the :class:`service.backends.Backend` interface.

    Args:
        source: a model path, or an already built session (kept as it is).
        precision: ``fp32`` or ``int8``: a label for what the file holds (ORT runs the graph
            as written: QDQ nodes in an INT8 file, float elsewhere).
        config: an ``EngineConfig`` (providers, thread counts).
    """

    name = "ort"

    def __init__(self, source: Any, precision: str, config: Any) -> None:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"the ort backend runs fp32 or int8 files, not {precision!r}")
        if isinstance(source, ort.InferenceSession):
            self.session, self.path = source, Path(getattr(source, "_model_path", "") or "")
        else:
            self.session, self.path = create_session(source, config), Path(source)
        self.precision = precision
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelLoadError(
                f"expected one input and a logits output, got {len(inputs)} inputs"
            )
        output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self.input_name, self.output_name = inputs[0].name, output.name
        self.input_shape, self.output_shape = list(inputs[0].shape), list(output.shape)
        self.metadata_props = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        return out
