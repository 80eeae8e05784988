"""Measure how each faster serving path agrees with ONNX Runtime fp32, and record it.

``fcn export`` calls :func:`check_precisions` on the validation images of the model's dataset
and :func:`record_checks` writes the result into the model files' metadata (key
``precision_checks``), where ``EngineConfig(precision="auto")`` reads it: a path is only served
by default when its recorded mIoU drop is at most 0.5 point
(:data:`service.backends.select.MAX_MIOU_DROP`).

Paths checked, each through the serving engine (decode, normalise, pad, tile, argmax):
``ort/int8`` when an INT8 file exists; with openvino installed ``openvino/int8`` and, on CPUs
with native bf16, ``openvino/bf16``. The reference is ``ort/fp32``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.backends import cpu_has_bf16, openvino_available
from service.backends.cpu import cpu_has_int8_dot, cpu_signature
from service.backends.reference import REFERENCE_KEY
from service.backends.select import CHECKS_KEY
from service.engine import Engine, EngineConfig
from training.export.onnx import read_metadata, save_onnx, write_metadata
from training.export.reference import build_reference_set, spread
from training.loop.metrics import ConfusionMatrix

logger = logging.getLogger(__name__)

REFERENCE = ("ort", "fp32")


def candidate_paths(int8_path: Path | None) -> list[tuple[str, str]]:
    """The ``(backend, precision)`` paths worth checking on this machine."""
    paths: list[tuple[str, str]] = []
    if int8_path is not None:
        paths.append(("ort", "int8"))
    if openvino_available():
        if cpu_has_bf16():
            paths.append(("openvino", "bf16"))
        if int8_path is not None:
            paths.append(("openvino", "int8"))
    return paths


def _update(matrix: ConfusionMatrix, prediction: np.ndarray, mask: np.ndarray) -> None:
    # astype copies: cached masks are read-only, torch wants writable arrays.
    matrix.update(
        torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    )


def check_precisions(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike | None = None,
    *,
    root: str | None = None,
    split: str = "val",
    checkpoint: str | os.PathLike | None = None,
    paths: list[tuple[str, str]] | None = None,
    **data_overrides: Any,
) -> dict[str, Any]:
    """Run the reference and every candidate path over ``split`` and compare them.

    Args:
        fp32_path: the exported fp32 model.
        int8_path: its INT8 copy, if one was written.
        root, split, checkpoint, data_overrides: the images, as for ``fcn evaluate --model``.
        paths: ``(backend, precision)`` to check; default :func:`candidate_paths`.

    Returns:
        The ``precision_checks`` value: ``reference`` (mIoU of ort fp32), ``results`` keyed
        ``"backend/precision"`` with ``miou``, ``miou_delta`` (points; negative = lost) and
        ``argmax_agreement`` with the reference, plus what was measured on.
    """
    from training.evaluate import onnx_dataset

    fp32_path = Path(fp32_path)
    int8 = Path(int8_path) if int8_path is not None else None
    paths = candidate_paths(int8) if paths is None else paths
    reference = Engine.load(fp32_path, EngineConfig(backend="ort", precision="fp32"))
    engines = {
        f"{b}/{p}": Engine.load(
            int8 if p == "int8" else fp32_path, EngineConfig(backend=b, precision=p)
        )
        for b, p in paths
    }
    dataset, info, cfg = onnx_dataset(
        reference, fp32_path, root=root, split=split, checkpoint=checkpoint, **data_overrides
    )
    ref_matrix = ConfusionMatrix(info.num_classes)
    matrices = {key: ConfusionMatrix(info.num_classes) for key in engines}
    same = dict.fromkeys(engines, 0)
    pixels = 0
    picks = set(spread(len(dataset)))
    ref_images, ref_predictions = [], []
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        expected = reference.predict(image)
        if index in picks:
            ref_images.append(image)
            ref_predictions.append(expected)
        _update(ref_matrix, expected, mask)
        pixels += expected.size
        for key, engine in engines.items():
            got = engine.predict(image)
            _update(matrices[key], got, mask)
            same[key] += int((got == expected).sum())
    # mIoU in points (0-100), as fcn evaluate computes it.
    ref_miou = 100 * ref_matrix.compute(info.classes).miou
    results = {}
    for key in engines:
        miou = 100 * matrices[key].compute(info.classes).miou
        results[key] = {
            "miou": round(miou, 4),
            "miou_delta": round(miou - ref_miou, 4),
            "argmax_agreement": round(same[key] / max(pixels, 1), 6),
        }
        logger.info(
            "%s: mIoU %.2f (%+.2f points), argmax agreement %.4f%%",
            key,
            miou,
            miou - ref_miou,
            100 * same[key] / max(pixels, 1),
        )
    reference_set = build_reference_set(ref_images, ref_predictions, reference, engines)
    return {
        REFERENCE_KEY: reference_set,
        "reference": {
            "backend": REFERENCE[0],
            "precision": REFERENCE[1],
            "miou": round(ref_miou, 4),
        },
        "results": results,
        "int8_file": int8.name if int8 is not None else None,
        "data": str(cfg.root),
        "split": split,
        "images": len(dataset),
        "cpu_bf16": cpu_has_bf16(),
        # INT8 kernels differ by CPU (VNNI dot products vs AVX2's vpmaddubsw, which saturates
        # in int16): where the checks ran says which kind of INT8 arithmetic they verified.
        "cpu": cpu_signature(),
        "cpu_int8_dot": cpu_has_int8_dot(),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def record_checks(checks: dict[str, Any], *model_paths: str | os.PathLike) -> None:
    """Write ``checks`` into each model's metadata, atomically.

    The reference crops (``checks["reference_set"]``, when present) go under their own key,
    :data:`service.backends.reference.REFERENCE_KEY`; the rest under ``precision_checks``.
    """
    checks = dict(checks)
    reference_set = checks.pop(REFERENCE_KEY, None)
    extra = {CHECKS_KEY: checks}
    if reference_set is not None:
        extra[REFERENCE_KEY] = reference_set
    for path in map(Path, model_paths):
        metadata = read_metadata(path)
        metadata = dataclasses.replace(metadata, extra={**metadata.extra, **extra})
        proto = onnx.load(str(path))
        write_metadata(proto, metadata)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
            staged = Path(tmp) / path.name
            save_onnx(proto, staged)
            os.replace(staged, path)
