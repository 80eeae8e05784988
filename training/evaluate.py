"""``fcn evaluate``: exact metrics of a checkpoint or an ONNX model on a dataset split.

A checkpoint is evaluated in torch with the data read exactly as in training: the data
options (layout, split fraction and seed, mask values, classes, normalisation) come from its
``config["data"]``, each overridable. An ONNX model is evaluated through the serving engine
(``service.engine.Engine``): it gets raw decoded pixels and normalises, pads and tiles them
itself from its metadata, so the numbers are what serving would produce; that is how an INT8
export is compared with its FP32 original. Its data options come from the metadata (classes,
channels, ignore index, and ``mask_values`` when the export stored them) and the command line,
or from ``--checkpoint`` when both are given.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.config import EVAL_SPLITS, DataConfig, OptionError
from training.data.datasets import build_datasets
from training.loop.distributed import DistInfo, from_env, resolve_device
from training.loop.epoch import evaluate
from training.loop.metrics import ConfusionMatrix, Metrics
from training.loop.sampling import eval_loader
from training.tta import with_flip_tta

logger = logging.getLogger(__name__)

# The DataConfig fields an exported model's metadata describes.
_DESCRIBED_DATA = ("classes", "in_channels", "ignore_index", "palette", "mask_values")


@dataclass
class EvalReport:
    """Metrics plus what was evaluated."""

    metrics: Metrics
    model: str
    data: str
    split: str
    images: int
    seconds: float
    served_by: str | None = None  # ONNX models: backend and precision, e.g. "openvino bf16"

    def to_dict(self) -> dict[str, Any]:
        """``{"miou", "per_class_iou", "pixel_accuracy", "mean_accuracy", "dice", ...}``."""
        return {
            **self.metrics.to_dict(),
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            **({"served_by": self.served_by} if self.served_by else {}),
        }


def data_config(saved: dict[str, Any] | None, root: str | None, **overrides: Any) -> DataConfig:
    """A ``DataConfig`` from a checkpoint's saved data options, the root and overrides.

    Raises:
        ValueError: no data folder given or saved, or an unknown option.
    """
    values = dict(saved or {})
    values.pop("augment", None)  # evaluation never augments
    known = {f.name for f in fields(DataConfig)}
    if root is not None:
        values["root"] = str(root)
    if not values.get("root"):
        raise OptionError("no dataset given or saved", options=("data",))
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown data option {key!r}; valid ones: {sorted(known)}")
        if value is not None:
            values[key] = value
    if overrides.get("mask_values") is not None:
        # New mask values may mean other classes: drop what the saved values implied.
        for key in ("classes", "num_classes", "palette"):
            if overrides.get(key) is None:
                values.pop(key, None)
    return DataConfig.from_dict(values)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    root: str | None = None,
    split: str = "val",
    device: str = "auto",
    batch_size: int = 4,
    workers: int = 0,
    tta: str = "none",
    **data_overrides: Any,
) -> EvalReport:
    """Evaluate a training checkpoint on ``split`` of its dataset (or ``root``).

    Args:
        checkpoint: a ``best.pt`` / ``last.pt``.
        root: dataset folder (default: the one it was trained on).
        split: ``val``, ``all`` or ``train`` (without augmentation).
        device: auto, cpu or cuda[:N].
        batch_size: full-size images per forward pass.
        workers: DataLoader workers.
        tta: ``none`` or ``hflip`` (training/tta.py: the mean of the image's and its mirror's logits).
        **data_overrides: ``DataConfig`` fields to change (e.g. ``mask_values``).

    Returns:
        ``EvalReport``.
    """
    _check_split(split)
    start = time.perf_counter()
    device_ = resolve_device(device, from_env())
    loaded = load_checkpoint(checkpoint, map_location=device_)
    saved = loaded.config
    cfg = data_config(saved.get("data"), root, **data_overrides)
    _, dataset, info = build_datasets(cfg, split=split)
    model = with_flip_tta(model_from_checkpoint(loaded, device_), tta)
    if info.num_classes != saved["model"]["num_classes"]:
        raise OptionError(
            f"the data has {info.num_classes} classes but {checkpoint} predicts "
            f"{saved['model']['num_classes']}",
            options=("mask_values", "classes"),
        )
    loader = eval_loader(
        dataset,
        batch_size=batch_size,
        workers=workers,
        ignore_index=info.ignore_index,
        info=DistInfo(),
    )
    result = evaluate(model, loader, info.num_classes, device=device_)
    metrics = result.matrix.compute(info.classes)
    return EvalReport(
        metrics, str(checkpoint), cfg.root, split, len(dataset), time.perf_counter() - start
    )


def evaluate_onnx(
    model_path: str | os.PathLike,
    *,
    root: str | None = None,
    split: str = "val",
    checkpoint: str | os.PathLike | None = None,
    backend: str = "auto",
    precision: str = "auto",
    **data_overrides: Any,
) -> EvalReport:
    """Evaluate an exported ONNX model through the serving engine.

    Args:
        model_path: the ``.onnx`` file (metadata per docs/contracts.md).
        root: dataset folder (default: the checkpoint's, when given).
        split: ``val``, ``all`` or ``train``.
        checkpoint: optional training checkpoint supplying the data options (split, mask
            values), so an export is evaluated on exactly its training validation set.
        backend: the engine's backend (``auto``, ``ort``, ``openvino``).
        precision: the engine's precision (``auto``, ``fp32``, ``bf16``, ``int8``).
        **data_overrides: ``DataConfig`` fields to change.

    Returns:
        ``EvalReport``; ``model`` names the backend and precision that served.
    """
    from service.engine import Engine, EngineConfig

    _check_split(split)
    start = time.perf_counter()
    engine = Engine.load(model_path, EngineConfig(backend=backend, precision=precision))
    dataset, info, cfg = onnx_dataset(
        engine, model_path, root=root, split=split, checkpoint=checkpoint, **data_overrides
    )
    matrix = ConfusionMatrix(info.num_classes)
    for index in range(len(dataset)):
        image, mask = dataset.load(index)  # raw decoded pixels: the engine normalises
        prediction = engine.predict(image)
        # astype copies: cached masks are read-only, torch wants writable arrays.
        matrix.update(
            torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
        )
    metrics = matrix.compute(info.classes)
    seconds = time.perf_counter() - start
    report = EvalReport(metrics, str(model_path), cfg.root, split, len(dataset), seconds)
    report.served_by = f"{engine.backend_name} {engine.precision}"
    return report


def onnx_dataset(
    engine: Any,
    model_path: str | os.PathLike,
    *,
    root: str | None = None,
    split: str = "val",
    checkpoint: str | os.PathLike | None = None,
    **data_overrides: Any,
) -> tuple[Any, Any, DataConfig]:
    """The ``split`` images and masks an exported model is evaluated on.

    Data options come from ``checkpoint`` when given, else from the model's metadata.

    Returns:
        ``(dataset, info, cfg)``; ``dataset.load(i)`` gives raw pixels and the class mask.

    Raises:
        ValueError: the data's classes or channels do not match the model.
    """
    _check_split(split)
    meta = engine.metadata
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint).config.get("data")
    else:
        # The model's own description of its data; mask_values (e.g. 0/255) keep encoded
        # masks from reading as class 0 and ignore_index.
        described = meta.to_dict()
        saved = {key: described[key] for key in _DESCRIBED_DATA}
        if saved["ignore_index"] is None:
            saved["ignore_index"] = 255
    cfg = data_config(saved, root, **data_overrides)
    _, dataset, info = build_datasets(cfg, split=split)
    if info.num_classes != meta.num_classes or info.in_channels != meta.in_channels:
        raise ValueError(
            f"the data has {info.num_classes} classes and {info.in_channels} channel(s) but "
            f"{model_path} expects {meta.num_classes} and {meta.in_channels}"
        )
    return dataset, info, cfg


def _check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")


def write_json(report: EvalReport, path: str | os.PathLike) -> Path:
    """Write ``report.to_dict()`` as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path
