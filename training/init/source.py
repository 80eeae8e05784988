"""What ``--init MODEL`` names: the model description and its float weights.

Accepted: ``default`` (the bundled default model: its fp32 source file
``models/default/default.fp16.onnx`` when the checkout has it, else the bundled INT8 file
dequantized), an exported ``.onnx`` (fp32, an INT8 QDQ file or an fp16 source file) or a
checkpoint (``.pt``). The description (architecture, builder options, classes, channels,
normalisation) comes from the ONNX metadata or the checkpoint's config, so a run started from
a model needs no ``--arch``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Builder options that would load other weights; the init model's weights replace them.
WEIGHT_OPTIONS = frozenset({"weights", "encoder_weights"})
DEFAULT_INIT = "default"
# The bundled default's fp32 source, relative to the repository root (models/default/README.md).
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "models" / "default" / "default.fp16.onnx"


class InitError(ValueError):
    """``--init`` names something that cannot start this run (the message says why)."""


@dataclass
class InitModel:
    """A model to start training from.

    Attributes:
        path: the file read.
        kind: ``"checkpoint"``, ``"onnx"`` (fp32), ``"int8"`` or ``"fp16-source"``.
        arch, options, classes, in_channels, mean, std, palette, mask_values, ignore_index:
            the model's description.
        proto: the fp32 ``onnx.ModelProto`` (ONNX kinds) or None.
        state: the checkpoint's state dict (checkpoints) or None.
    """

    path: Path
    kind: str
    arch: str
    options: dict[str, Any]
    classes: list[str]
    in_channels: int
    mean: list[float]
    std: list[float]
    palette: list[list[int]]
    mask_values: list[int] | None = None
    ignore_index: int | None = None
    proto: Any = None
    state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resolve_init(spec: str | os.PathLike) -> Path:
    """The file ``spec`` names (``default`` resolved).

    Raises:
        InitError: no such file.
    """
    if str(spec) == DEFAULT_INIT:
        if DEFAULT_SOURCE.is_file():
            return DEFAULT_SOURCE
        from service.models import bundled_model_path

        return bundled_model_path()
    path = Path(spec)
    if not path.is_file():
        raise InitError(
            f"--init {spec}: no such file (expected 'default', a .onnx model or a .pt checkpoint)"
        )
    return path


def _onnx_description(path: Path, props: dict[str, str]) -> dict[str, Any]:
    from service.errors import MetadataError
    from service.metadata import ModelMetadata

    try:
        meta = ModelMetadata.from_props(props)
    except MetadataError as exc:
        raise InitError(f"--init {path}: {exc}") from exc
    kind = "onnx"
    if meta.quantized:
        kind = "int8"
    elif "fp16_source" in meta.extra:
        kind = "fp16-source"
    return {
        "kind": kind,
        "arch": meta.arch,
        "options": dict(meta.options),
        "classes": list(meta.classes),
        "in_channels": meta.in_channels,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "palette": [list(c) for c in meta.palette],
        "mask_values": None if meta.mask_values is None else list(meta.mask_values),
        "ignore_index": meta.ignore_index,
    }


def _checkpoint_description(config: dict[str, Any]) -> dict[str, Any]:
    model, data = config["model"], config.get("data") or {}
    count = int(model["num_classes"])
    return {
        "kind": "checkpoint",
        "arch": model["arch"],
        "options": dict(model.get("options") or {}),
        "classes": list(data.get("classes") or [f"class_{i}" for i in range(count)]),
        "in_channels": int(model.get("in_channels", 3)),
        "mean": list(data.get("mean") or []),
        "std": list(data.get("std") or []),
        "palette": [list(c) for c in data.get("palette") or []],
        "mask_values": data.get("mask_values"),
        "ignore_index": data.get("ignore_index"),
    }


def describe_init(spec: str | os.PathLike) -> InitModel:
    """The description only (no weights decoded): what the CLI needs to build the config.

    Raises:
        InitError: missing file, unreadable metadata or checkpoint.
    """
    path = resolve_init(spec)
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        return InitModel(path=path, **_onnx_description(path, props))
    from training.checkpoint import load_checkpoint

    try:
        checkpoint = load_checkpoint(path)
    except ValueError as exc:
        raise InitError(f"--init {path}: {exc}") from exc
    return InitModel(
        path=path, state=checkpoint.model, **_checkpoint_description(checkpoint.config)
    )


def read_init(spec: str | os.PathLike) -> InitModel:
    """The description and the fp32 weights (an ONNX graph or a checkpoint's state dict).

    Raises:
        InitError: as :func:`describe_init`, or an ONNX file that cannot be turned into fp32.
    """
    import onnx

    from training.export.recover import RecoverError, dequantize_qdq, from_fp16_source

    init = describe_init(spec)
    if init.kind == "checkpoint":
        return init
    proto = onnx.load(str(init.path))
    try:
        if init.kind == "int8":
            proto = dequantize_qdq(proto)
        elif init.kind == "fp16-source":
            proto = from_fp16_source(proto)
    except RecoverError as exc:
        raise InitError(f"--init {init.path}: {exc}") from exc
    init.proto = proto
    return init


def builder_options(init: InitModel) -> dict[str, Any]:
    """The init model's builder options without those that load other weights."""
    return {k: v for k, v in init.options.items() if k not in WEIGHT_OPTIONS}


def lineage(init: InitModel) -> dict[str, Any]:
    """What a run records about the model it started from (JSON-able)."""
    return json.loads(json.dumps({"path": str(init.path), "kind": init.kind}))
