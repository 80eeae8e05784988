"""The OpenVINO backend: the OpenVINO runtime reading the same ``.onnx`` file, on the CPU.

``openvino`` is imported here only, when this backend is chosen (extra ``fcnseg[openvino]``).
Precision is set with ``INFERENCE_PRECISION_HINT``: ``f32`` for fp32 (OpenVINO would otherwise
pick bf16 by itself on AMX CPUs), ``bf16`` for bf16; an INT8 (QDQ) file runs its quantized
operations in int8 and the rest at the CPU's best float precision, as OpenVINO defaults to.

Memory over many image sizes is bounded by two caches, both keyed by input shape: OpenVINO's
per-model runtime cache (``CPU_RUNTIME_CACHE_CAPACITY``, :data:`SHAPE_CACHE_CAPACITY` shapes)
and oneDNN's process-wide primitive cache (the JIT-compiled kernels under it, 1024 primitives
by default; :data:`PRIMITIVE_CACHE_CAPACITY` here, set through its environment variable).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from service.backends import openvino_missing
from service.backends.external_data import check_external_data
from service.errors import ModelLoadError

SHAPE_CACHE_CAPACITY = 16
PRIMITIVE_CACHE_CAPACITY = 64
_PRIMITIVE_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}


def bound_primitive_cache() -> None:
    """Cap oneDNN's primitive cache unless the user set it (either of its variable names).

    oneDNN (inside OpenVINO's CPU plugin) keeps up to 1024 JIT-compiled primitives for the whole
    process, each specific to one input shape. bf16 and INT8 kernels are large: a U-Net-r34
    grew 399 -> 521 MB (bf16) and 379 -> 481 MB (INT8) over 200 image sizes, with OpenVINO's
    own shape cache already bounded; with 64 primitives, +0.9% and +3.2%, and a new shape costs
    a few ms more at most (bench/results/backends_bench.json, onednn_cache_bench.json). oneDNN
    reads the variable once, when it first creates a primitive, so this runs before the first
    model is compiled.
    """
    if not any(name in os.environ for name in _PRIMITIVE_CACHE_ENV):
        os.environ[_PRIMITIVE_CACHE_ENV[0]] = str(PRIMITIVE_CACHE_CAPACITY)


def _dim(d: Any) -> int | str:
    return d.get_length() if d.is_static else "?"


class OpenVinoBackend:
    """A compiled OpenVINO model behind the :class:`service.backends.Backend` interface.

    Args:
        path: the ``.onnx`` file (metadata is read from it too).
        precision: ``fp32``, ``bf16`` or ``int8`` (the latter for a QDQ file).
        config: an ``EngineConfig``: ``concurrency`` OpenVINO streams (requests that run at
            once), each with ``intra_op_threads`` threads when > 0, else OpenVINO's share.

    Raises:
        ModelLoadError: openvino is not installed, the file is missing, or OpenVINO rejects it.
    """

    name = "openvino"

    def __init__(self, path: str | Path, precision: str, config: Any) -> None:
        if precision not in _HINTS:
            raise ValueError(f"the openvino backend runs fp32, bf16 or int8, not {precision!r}")
        bound_primitive_cache()
        try:
            import openvino as ov
        except ImportError as exc:
            raise openvino_missing() from exc
        self.path, self.precision = Path(path), precision
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        check_external_data(self.path)  # OpenVINO follows any location it is given
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long traces
            raise ModelLoadError(f"OpenVINO cannot read {self.path}: {exc}") from exc
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise ModelLoadError(
                f"expected one input and a logits output, got {len(model.inputs)} inputs"
            )
        output = next((o for o in model.outputs if "logits" in o.get_names()), model.outputs[0])
        self.input_name = model.inputs[0].get_any_name()
        self.input_shape = [_dim(d) for d in model.inputs[0].get_partial_shape()]
        self.output_shape = [_dim(d) for d in output.get_partial_shape()]
        framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
        self.metadata_props = {key: value.astype(str) for key, value in dict(framework).items()}
        streams = int(getattr(config, "concurrency", 1))
        properties: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            # One stream runs one request at a time: concurrent callers (the batch runner's
            # inference streams) need one stream each, or they queue behind each other.
            "NUM_STREAMS": streams,
            # The CPU plugin keeps compiled kernels for every input shape it has seen (5000 by
            # default): a service seeing many image sizes grew 228 -> 597 MB over 160 sizes.
            # Keeping the last 16 shapes holds it flat (204 -> 253 MB) and still keeps
            # alternating sizes cheap (0 re-compiles on every change of shape).
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE_CAPACITY,
        }
        if _HINTS[precision] is not None:
            properties["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        if config.intra_op_threads > 0:  # OpenVINO counts the threads of all streams
            properties["INFERENCE_NUM_THREADS"] = config.intra_op_threads * streams
        try:
            self.compiled = core.compile_model(model, "CPU", properties)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO cannot compile {self.path}: {exc}") from exc
        self._output = self.compiled.outputs[
            [o.get_any_name() for o in model.outputs].index(output.get_any_name())
        ]
        # An infer request is not thread-safe: one per calling thread (the HTTP app may run
        # several predictions at once, as it can with one ORT session).
        self._local = threading.local()

    @property
    def providers(self) -> list[str]:
        return [f"openvino:CPU ({self.precision})"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        # Results are copied out of the request's buffers, which the next call reuses.
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: batch})
        return np.array(result[self._output], copy=True)
