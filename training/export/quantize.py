"""Static INT8 quantization of an exported model (QDQ format), calibrated on real images.

Public API::

    result = quantize_int8("model.onnx", "model.int8.onnx", calibration_images("data/isbi"))

Calibration images are decoded and normalised by the serving engine itself
(:meth:`service.engine.Engine.decode` / :meth:`~service.engine.Engine.normalise`) and padded to
the model's ``size_multiple`` with its rule, so the ranges are those of served inputs. Weights
are quantized per output channel (signed 8-bit), activations per tensor (unsigned 8-bit): the
u8 x s8 combination ONNX Runtime's x86 kernels (VNNI) are fastest at. The INT8 file keeps the
FP32 model's metadata plus a ``quantization`` entry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from service.engine import Engine, EngineConfig, pad_to_multiple
from service.imaging import IMAGE_EXTENSIONS
from service.metadata import ModelMetadata
from training.config import DataConfig, OptionError
from training.data.datasets import list_pairs
from training.data.layouts import detect_layout
from training.export.onnx import read_metadata, save_onnx, write_metadata

logger = logging.getLogger(__name__)

CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
ACTIVATION_TYPES: dict[str, QuantType] = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
_CPU = EngineConfig(providers=("CPUExecutionProvider",))


class QuantizeError(OptionError):
    """Quantization could not run (bad calibration data) or its result is unusable."""


@dataclass
class QuantizeResult:
    """What :func:`quantize_int8` wrote and how close it stays to the FP32 model."""

    path: Path
    metadata: ModelMetadata
    agreement: float  # fraction of calibration pixels whose INT8 argmax equals FP32's
    seconds: float


def calibration_images(
    directory: str | os.PathLike,
    *,
    split: str = "train",
    layout: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> list[Path]:
    """The images to calibrate on.

    A dataset folder (``images/`` and ``masks/``, or any layout ``training.data.datasets`` knows) gives
    the images of its ``split`` with the training split rule, so validation images never leak
    into calibration; any other folder gives every image file in it, sorted.

    Raises:
        QuantizeError: ``directory`` is not a folder or holds no images.
    """
    root = Path(directory)
    if not root.is_dir():
        raise QuantizeError(f"calibration data {root} is not a folder of images")
    paths: list[Path] = []
    if detect_layout(root) is not None:
        cfg = DataConfig(root=str(root), layout=layout, val_fraction=val_fraction, seed=seed)
        paths = [pair.image for pair in list_pairs(cfg, split)]
    else:
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise QuantizeError(
            f"no images in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files, or a "
            "dataset with images/ and masks/)"
        )
    return paths[:limit] if limit else paths


class ImageReader(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime as the engine would, one at a time.

    Args:
        engine: the FP32 model's engine (decoding, normalisation and padding rule).
        paths: image files.
        size: centre-crop side for a fixed calibration size (e.g. the tile size); ``None``
            keeps each image's natural size.
    """

    def __init__(self, engine: Engine, paths: Sequence[Path], size: int | None = None) -> None:
        self.engine, self.paths, self.size = engine, list(paths), size
        self._range = range(len(self.paths))
        self._iter = iter(self._range)

    def __len__(self) -> int:
        return len(self.paths)

    def set_range(self, start_index: int, end_index: int) -> None:
        # ONNX Runtime calls this to collect statistics in strides, bounding memory.
        self._range = range(start_index, min(end_index, len(self.paths)))
        self._iter = iter(self._range)

    def batch(self, index: int) -> np.ndarray:
        """The padded ``(1, C, H, W)`` float32 input for image ``index``."""
        pixels = self.engine.decode(self.paths[index])
        if self.size is not None:
            h, w = pixels.shape[:2]
            top, left = max(0, (h - self.size) // 2), max(0, (w - self.size) // 2)
            pixels = pixels[top : top + self.size, left : left + self.size]
        x = self.engine.normalise(pixels)[None]
        return pad_to_multiple(x, self.engine.metadata.size_multiple)

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self._iter, None)
        return None if index is None else {self.engine.input_name: self.batch(index)}


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the last Conv/ConvTranspose nodes before the output (the classifier head).

    Walks back from the graph output through shape-preserving ops (Slice, Resize, Identity,
    Add...) and returns every convolution reached first on each path: for FCN-8s the score
    layers feeding the skip sums, for a U-Net its segmentation head.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    found: list[str] = []
    stack = [o.name for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Conv", "ConvTranspose"):
            found.append(node.name)
            continue
        stack.extend(node.input)
    return found


class _DropRootInfo(logging.Filter):
    # onnxruntime.quantization logs one line per tensor through the root logger.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _agreement(fp32: Engine, int8: Engine, reader: ImageReader, count: int) -> float:
    same = total = 0
    for index in range(min(count, len(reader))):
        x = reader.batch(index)
        a = fp32.run_normalised(x).argmax(1)
        b = int8.run_normalised(x).argmax(1)
        same, total = same + int((a == b).sum()), total + a.size
    return same / max(total, 1)


def _pre_process(source: Path, target: Path) -> None:
    """Graph cleanup and ONNX shape inference: the quantizer needs every tensor's type.

    ORT's symbolic shape inference is skipped: ONNX's own inference types every tensor of these
    conv nets, and the symbolic one gives up on torch.export's shape arithmetic, dumping a copy
    of the model (weights included) into the working directory when it does.
    """
    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def quantize_int8(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    images: Iterable[Path],
    *,
    method: str = "minmax",
    size: int | None = None,
    per_channel: bool = True,
    exclude_head: bool = False,
    exclude_op_types: Sequence[str] = (),
    min_agreement: float = 0.9,
    check_images: int = 4,
    reduce_range: bool = True,
    activations: str = "uint8",
) -> QuantizeResult:
    """Quantize an exported FP32 model to static INT8 (QDQ) and check it against FP32.

    Args:
        fp32_path: a model written by :func:`training.export.onnx.export_model`.
        out: the INT8 ``.onnx`` to write (replaced atomically, only after the check).
        images: calibration image files (see :func:`calibration_images`).
        method: ``minmax``, ``percentile`` or ``entropy``.
        size: fixed calibration crop side; ``None`` for natural sizes.
        per_channel: per-output-channel weight scales (more accurate, same speed).
        exclude_head: keep the classifier convolution(s) in FP32 (see :func:`head_nodes`).
        exclude_op_types: op types left in FP32 (e.g. ``["Resize"]``).
        min_agreement: smallest fraction of pixels (on up to ``check_images`` calibration
            images) whose INT8 argmax must equal FP32's.
        check_images: how many calibration images the agreement check runs on.
        reduce_range: weights on 7 bits instead of 8, so that the u8 x s8 products of CPUs
            without VNNI (AVX2's ``vpmaddubsw`` adds pairs into int16) cannot saturate; see
            the module docstring.
        activations: ``uint8`` (u8 x s8) or ``int8`` (s8 x s8).

    Returns:
        The path, metadata, FP32 agreement and time taken.

    Raises:
        QuantizeError: unknown method, no images, or agreement below ``min_agreement``.
        service.errors.ModelError: ``fp32_path`` is not a loadable exported model.
    """
    if activations not in ACTIVATION_TYPES:
        raise QuantizeError(
            f"unknown activation type {activations!r}; use one of {', '.join(ACTIVATION_TYPES)}"
        )
    if method not in CALIBRATION_METHODS:
        raise QuantizeError(
            f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}"
        )
    paths = list(images)
    if not paths:
        raise QuantizeError("no calibration images given")
    start = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = Engine.load(fp32_path, _CPU)
    reader = ImageReader(fp32, paths, size)
    metadata = read_metadata(fp32_path)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        pre, staged = Path(tmp) / "pre.onnx", Path(tmp) / out.name
        _pre_process(Path(fp32_path), pre)
        proto = onnx.load(str(pre), load_external_data=False)
        exclude = head_nodes(proto) if exclude_head else []
        exclude += [n.name for n in proto.graph.node if n.op_type in set(exclude_op_types)]
        del proto
        logger.info(
            "calibrating on %d images (%s, %s), keeping %d nodes in FP32",
            len(paths),
            method,
            f"{size}px crops" if size else "natural size",
            len(exclude),
        )
        _run_quantizer(
            pre,
            staged,
            reader,
            per_channel=per_channel,
            activations=activations,
            reduce_range=reduce_range,
            method=method,
            exclude=exclude,
        )
        int8_proto = onnx.load(str(staged))
        quant_info = {
            "format": "QDQ",
            "activations": activations,
            "weights": "int8",
            "reduce_range": reduce_range,
            "per_channel": per_channel,
            "method": method,
            "calibration_images": len(paths),
            "calibration_size": size,
            "fp32_nodes": len(exclude),
        }
        write_metadata(int8_proto, _with_quantization(metadata, quant_info))
        save_onnx(int8_proto, staged)
        del int8_proto
        agreement = _agreement(fp32, Engine.load(staged, _CPU), reader, check_images)
        quant_info["fp32_agreement"] = round(agreement, 6)
        if agreement < min_agreement:
            raise QuantizeError(
                f"INT8 model agrees with FP32 on only {agreement:.2%} of calibration pixels "
                f"(required {min_agreement:.0%}); try the percentile or entropy calibration "
                "method, or keep the classifier head in FP32",
                options=("calibration_method",),
            )
        final = onnx.load(str(staged))
        metadata = _with_quantization(metadata, quant_info)
        write_metadata(final, metadata)
        save_onnx(final, staged)
        os.replace(staged, out)
    seconds = time.perf_counter() - start
    logger.info(
        "wrote %s in %.1fs (argmax agrees with FP32 on %.3f%% of pixels)",
        out,
        seconds,
        100 * agreement,
    )
    return QuantizeResult(out, metadata, agreement, seconds)


def _run_quantizer(
    source: Path,
    target: Path,
    reader: ImageReader,
    *,
    per_channel: bool,
    activations: str,
    reduce_range: bool,
    method: str,
    exclude: list[str],
) -> None:
    """ONNX Runtime's static QDQ quantizer, its per-tensor log lines silenced."""
    quiet = _DropRootInfo()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_static(
            str(source),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=ACTIVATION_TYPES[activations],
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            calibrate_method=CALIBRATION_METHODS[method],
            nodes_to_exclude=exclude,
            # One image per statistics pass: histogram methods otherwise keep every
            # intermediate activation of every image in memory at once.
            extra_options={"CalibStridedMinMax": 1},
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def _with_quantization(metadata: ModelMetadata, quant_info: dict[str, Any]) -> ModelMetadata:
    """The FP32 model's description plus a ``quantization`` entry."""
    return dataclasses.replace(metadata, extra={**metadata.extra, "quantization": quant_info})
