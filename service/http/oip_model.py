"""A served model as the Open Inference Protocol sees it: its tensors, metadata and inference.

Inputs (send exactly one):

* ``image`` — BYTES, shape ``[1]``: one encoded image file (PNG, JPEG, ...), decoded by the
  service's own decoder with its limits, exactly as ``POST /v1/segment`` does;
* ``pixels`` — UINT8 (0-255), UINT16 (0-65535) or FP32 (0-1), shape ``[H, W, C]`` row major
  (``C`` = the model's ``in_channels``; ``[H, W]`` also for one channel): decoded pixels.

Outputs:

* ``mask`` — UINT8 ``[H, W]`` class indices (UINT16 above 256 classes), the default;
* ``scores`` — FP32 ``[K, H, W]`` per-class softmax probabilities, only when asked for, and only
  while ``K * H * W * 4`` bytes fit the body limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from service import pipeline
from service.engine import argmax_classes
from service.http.oip import BYTES, Output, ProtocolError, Request, encode_response, parse_request
from service.http.served_models import LoadedModel
from service.imaging import check_size

IMAGE, PIXELS = "image", "pixels"
MASK, SCORES = "mask", "scores"
PIXEL_DATATYPES = ("UINT8", "UINT16", "FP32")
PLATFORMS = {"ort": "onnxruntime_onnx", "openvino": "openvino"}


def metadata(model: LoadedModel) -> dict:
    """``$metadata_model_response`` (``parameters`` says which input to send and the classes)."""
    meta = model.engine.metadata
    mask_type = "UINT8" if model.engine.mask_dtype == np.uint8 else "UINT16"
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORMS.get(model.engine.backend_name, model.engine.backend_name),
        "inputs": [
            {"name": IMAGE, "datatype": BYTES, "shape": [1]},
            {"name": PIXELS, "datatype": "UINT8", "shape": [-1, -1, meta.in_channels]},
        ],
        "outputs": [
            {"name": MASK, "datatype": mask_type, "shape": [-1, -1]},
            {"name": SCORES, "datatype": "FP32", "shape": [meta.num_classes, -1, -1]},
        ],
        "parameters": {
            "inputs": f"exactly one of {IMAGE!r} (an encoded image file) or {PIXELS!r} "
            f"({', '.join(PIXEL_DATATYPES)} [H, W, C])",
            "classes": list(meta.classes),
            "arch": meta.arch,
        },
    }


@dataclass(frozen=True)
class Inference:
    """An encoded response and what the headers report."""

    body: bytes
    json_length: int | None
    width: int
    height: int
    decode_ms: float
    infer_ms: float


def _pixels(model: LoadedModel, request: Request) -> tuple[np.ndarray, float]:
    """The input image as ``(H, W, C)`` pixels, and milliseconds spent decoding."""
    names = set(request.inputs)
    if names - {IMAGE, PIXELS} or len(names) != 1:
        raise ProtocolError(
            f"send exactly one input, {IMAGE!r} (BYTES, an encoded image) or {PIXELS!r} "
            f"({'/'.join(PIXEL_DATATYPES)} [H, W, C]); got {', '.join(sorted(names))}",
            422,
            "missing_image",
        )
    engine = model.engine
    if IMAGE in request.inputs:
        tensor = request.inputs[IMAGE]
        if tensor.datatype != BYTES or len(tensor.value) != 1:
            raise ProtocolError(
                f"input {IMAGE!r} must be BYTES holding one encoded image (shape [1]), got "
                f"{tensor.datatype} of shape {list(tensor.shape)}"
            )
        return pipeline.decode(engine, tensor.value[0])
    tensor = request.inputs[PIXELS]
    channels = engine.metadata.in_channels
    array = tensor.value
    if isinstance(array, np.ndarray) and array.ndim == 2 and channels == 1:
        array = array[:, :, None]
    if (
        tensor.datatype not in PIXEL_DATATYPES
        or not isinstance(array, np.ndarray)
        or array.ndim != 3
        or array.shape[2] != channels
        or 0 in array.shape
    ):
        raise ProtocolError(
            f"input {PIXELS!r} must be {'/'.join(PIXEL_DATATYPES)} of shape [H, W, {channels}] "
            f"with H, W >= 1, got {tensor.datatype} of shape {list(tensor.shape)}"
        )
    cfg = engine.config
    check_size(array.shape[1], array.shape[0], max_pixels=cfg.max_pixels, max_side=cfg.max_side)
    return array, 0.0


def _outputs(request: Request) -> list[tuple[str, bool]]:
    """The outputs asked for, in order, each with whether it goes out as binary data."""
    if request.outputs is None:
        return [(MASK, request.wants_binary(None))]
    chosen = []
    for out in request.outputs:
        if out.name not in (MASK, SCORES):
            raise ProtocolError(f"unknown output {out.name!r}; outputs are {MASK!r}, {SCORES!r}")
        chosen.append((out.name, request.wants_binary(out)))
    return chosen


def _softmax(logits: np.ndarray) -> np.ndarray:
    scores = logits - logits.max(axis=0, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0, keepdims=True)
    return scores


def infer(
    model: LoadedModel, body: bytes, json_length: int | None, max_response_bytes: int
) -> Inference:
    """Parse an inference request, run ``model`` and encode the response (an inference thread).

    Raises:
        ProtocolError: the request is malformed or asks for what this model does not have.
        service.errors.ImageError: the image is not allowed, corrupt or too large.
        service.errors.ModelError: the model failed.
    """
    request = parse_request(body, json_length)
    wanted = _outputs(request)
    pixels, decode_ms = _pixels(model, request)
    engine = model.engine
    height, width = pixels.shape[:2]
    start = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    if any(name == SCORES for name, _ in wanted):
        size = engine.metadata.num_classes * height * width * 4
        if size > max_response_bytes:
            raise ProtocolError(
                f"scores for a {width}x{height} image would be {size} bytes, over the limit of "
                f"{max_response_bytes}; ask for {MASK!r} only, or send a smaller image",
                413,
                "response_too_large",
            )
        logits = engine.logits(pixels)
        arrays[MASK] = argmax_classes(logits, engine.mask_dtype)
        arrays[SCORES] = _softmax(logits)
    else:
        arrays[MASK] = pipeline.infer(engine, pixels).mask
    infer_ms = (time.perf_counter() - start) * 1000.0
    header = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        header["id"] = request.id
    outputs = [Output(name, arrays[name], binary) for name, binary in wanted]
    payload, json_length = encode_response(header, outputs)
    return Inference(payload, json_length, width, height, decode_ms, infer_ms)
