"""Export a trained model to ONNX: one file holding the graph and its metadata, parity-checked.

Public API::

    result = export_checkpoint("runs/isbi/best.pt", "model.onnx")   # -> ExportResult
    result = export_model(model, config, "model.onnx")               # a model already in memory
    metadata = read_metadata("model.onnx")                           # service.metadata.ModelMetadata

What is exported is the graph from :func:`fcn.padding.unwrap`: for smp models the inner network
(the serving engine pads to ``size_multiple`` itself), for FCN-32s/16s/8s the whole model.
Input ``image`` and output ``logits`` have dynamic batch, height and width (docs/contracts.md).

The file only appears at ``out`` after :func:`check_parity` has run it through the serving
engine's pad/run/crop path and compared the logits with torch's on odd sizes: what is served is
what was checked. Any failure raises :class:`ExportError` and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from torch import nn

from fcn.padding import unwrap
from service.errors import MetadataError
from service.metadata import ModelMetadata
from training.config import OptionError
from training.data.layouts import class_palette

logger = logging.getLogger(__name__)

OPSET = 18  # pinned: the serving side's onnxruntime must implement this opset
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Odd sizes on purpose: none is a multiple of 32, so the engine's padding is exercised.
PARITY_SIZES: tuple[tuple[int, int], ...] = ((1, 1), (97, 130), (333, 517))
# protobuf cannot serialise a message above 2 GiB; only then are the weights stored beside it.
_PROTO_LIMIT = 2**31 - 64 * 2**20

Exporter = Literal["dynamo", "legacy"]


class ExportError(OptionError):
    """The model could not be exported, or the exported file is not what torch computes."""


class ParityError(ExportError):
    """ONNX Runtime's logits differ from torch's beyond the tolerance; ``report`` has numbers."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ParityReport:
    """Per-size comparison of served ONNX logits with torch ``model(x)``."""

    sizes: list[tuple[int, int]] = field(default_factory=list)
    max_abs_diff: list[float] = field(default_factory=list)
    argmax_agreement: list[float] = field(default_factory=list)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    metadata: ModelMetadata
    parity: ParityReport | None
    seconds: float


def model_metadata(
    config: Mapping[str, Any], *, size_multiple: int, extra: Mapping[str, Any] | None = None
) -> ModelMetadata:
    """The description an exported model carries, from a checkpoint's training config.

    Args:
        config: the checkpoint's ``config`` (docs/contracts.md): ``model`` (arch, num_classes,
            in_channels, options) and ``data`` (classes, palette, mean, std, ignore_index,
            mask_values as the data was read).
        size_multiple: the multiple the engine must pad H and W to.
        extra: further keys (training metric, provenance); they may not shadow described ones.

    Returns:
        The validated :class:`service.metadata.ModelMetadata`.

    Raises:
        ExportError: a required entry is missing or inconsistent with the model.
    """
    model_cfg = config.get("model") or {}
    data = config.get("data") or {}
    missing = [k for k in ("arch", "num_classes") if k not in model_cfg]
    missing += [k for k in ("mean", "std") if data.get(k) is None]
    if missing:
        raise ExportError(
            f"training config lacks {missing}; expected the checkpoint layout of "
            "docs/contracts.md (config['model'] with arch/num_classes, config['data'] with "
            "mean/std)"
        )
    num_classes = int(model_cfg["num_classes"])
    in_channels = int(model_cfg.get("in_channels", 3))
    classes = list(data.get("classes") or [f"class_{i}" for i in range(num_classes)])
    palette = data.get("palette") or class_palette(num_classes)
    mean, std = [float(v) for v in data["mean"]], [float(v) for v in data["std"]]
    for key, values, length in (
        ("classes", classes, num_classes),
        ("palette", palette, num_classes),
    ):
        if len(values) != length:
            raise ExportError(f"config has {len(values)} {key} for {num_classes} classes")
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != in_channels:
            raise ExportError(f"config {key} has {len(values)} values for {in_channels} channels")
    mask_values = data.get("mask_values")
    meta = ModelMetadata(
        arch=str(model_cfg["arch"]),
        classes=tuple(str(c) for c in classes),
        palette=tuple((int(r), int(g), int(b)) for r, g, b in palette),
        in_channels=in_channels,
        mean=tuple(mean),
        std=tuple(std),
        size_multiple=int(size_multiple),
        ignore_index=data.get("ignore_index"),
        num_classes=num_classes,
        options=dict(model_cfg.get("options") or {}),
        mask_values=None if mask_values is None else tuple(int(v) for v in mask_values),
        extra=dict(extra or {}),
    )
    try:
        # What the service will read back: validate with its own reader now.
        ModelMetadata.from_props(meta.to_props())
    except MetadataError as exc:
        raise ExportError(f"cannot describe the model: {exc}") from exc
    return meta


def write_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace ``proto.metadata_props`` with ``metadata.to_props()``."""
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The parsed ``metadata_props`` of an ONNX file (weights are not loaded).

    Raises:
        service.errors.MetadataError: a key is missing or invalid.
    """
    proto = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporters print progress, log every graph pass and warn about deprecations; the CLI's
    # output should stay ours.
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def trace_to_onnx(
    graph: nn.Module,
    path: Path,
    *,
    in_channels: int,
    size_multiple: int,
    opset: int,
    exporter: Exporter,
) -> None:
    """Export ``graph`` with dynamic N, H, W to ``path`` (the exporter's raw output).

    Raises:
        ExportError: the exporter failed (its message says which operation).
    """
    # Batch 2 and sides > 1: torch.export specialises dimensions whose example size is 0 or 1.
    side = -(-64 // size_multiple) * size_multiple
    example = torch.randn(2, in_channels, side, side)
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    try:
        with torch.no_grad(), _quiet_exporter():
            if exporter == "dynamo":
                dims = {
                    0: torch.export.Dim("batch"),
                    2: torch.export.Dim("height"),
                    3: torch.export.Dim("width"),
                }
                torch.onnx.export(
                    graph,
                    (example,),
                    str(path),
                    dynamo=True,
                    external_data=True,
                    dynamic_shapes=(dims,),
                    optimize=True,
                    **common,
                )
            elif exporter == "legacy":
                axes = {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(
                    graph,
                    (example,),
                    str(path),
                    dynamo=False,
                    dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                    do_constant_folding=True,
                    **common,
                )
            else:
                raise ExportError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise ExportError(
            f"torch.onnx.export ({exporter}) failed: {first}. Try the other exporter ({other!r})",
            options=("exporter",),
        ) from exc


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Save as one file; weights go to ``<name>.data`` only above protobuf's 2 GiB limit."""
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    external = weights > _PROTO_LIMIT
    onnx.save(
        proto,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data" if external else None,
    )


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    *,
    sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
    atol: float = 1e-3,
    rtol: float = 1e-5,
    min_agreement: float = 0.999,
    seed: int = 0,
) -> ParityReport:
    """Compare torch ``model(x)`` with the serving engine's pad/run/crop on random inputs.

    Args:
        model: the full torch model (with its own padding), in eval mode.
        onnx_path: the exported file, metadata included (the engine reads it).
        sizes: ``(H, W)`` to try; include sizes that are not multiples of ``size_multiple``.
        atol: largest allowed absolute logit difference...
        rtol: ...plus this fraction of the largest torch logit: float32 sums over thousands
            of terms err relative to their magnitude, and untrained (random-weight) nets
            produce logits in the hundreds. For trained logits (|x| < 20) it adds < 2e-4.
        min_agreement: smallest allowed fraction of pixels whose argmax agrees.
        seed: seed of the random inputs.

    Returns:
        The per-size numbers.

    Raises:
        ParityError: a size exceeds the tolerance or falls below ``min_agreement``.
        service.errors.ModelError: the engine rejects the file or its metadata.
    """
    from service.engine import Engine, EngineConfig

    engine = Engine.load(onnx_path, EngineConfig(providers=("CPUExecutionProvider",)))
    generator = torch.Generator().manual_seed(seed)
    report = ParityReport()
    for height, width in sizes:
        x = torch.randn(1, engine.metadata.in_channels, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        got = engine.run_normalised(x.numpy())
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
        agree = float((got.argmax(1) == expected.argmax(1)).mean()) if np.isfinite(diff) else 0.0
        allowed = atol + rtol * float(np.abs(expected).max())
        report.sizes.append((height, width))
        report.max_abs_diff.append(diff)
        report.argmax_agreement.append(agree)
        logger.info(
            "parity %dx%d: max |diff| %.2e, argmax agreement %.5f", height, width, diff, agree
        )
        if not (diff <= allowed and agree >= min_agreement):
            raise ParityError(
                f"exported model disagrees with torch at {height}x{width}: max |logit diff| "
                f"{diff:.3g} (allowed {allowed:.3g}), argmax agreement {agree:.4%} (required "
                f"{min_agreement:.2%}); the graph does not compute what the model does at this "
                "size (an unsupported dynamic-shape operation?)",
                report,
            )
    return report


def export_model(
    model: nn.Module,
    config: Mapping[str, Any],
    out: str | os.PathLike,
    *,
    opset: int = OPSET,
    exporter: Exporter = "dynamo",
    parity_sizes: Sequence[tuple[int, int]] | None = PARITY_SIZES,
    atol: float = 1e-3,
    rtol: float = 1e-5,
    min_agreement: float = 0.999,
    extra_metadata: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export ``model`` to ``out`` with metadata, check it, and only then move it into place.

    Args:
        model: a model built by :func:`fcn.build_model` (weights loaded).
        config: its training config (see :func:`model_metadata`).
        out: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset, >= 17.
        exporter: ``"dynamo"`` (torch.export) or ``"legacy"`` (TorchScript tracing).
        parity_sizes: sizes for :func:`check_parity`; ``None`` or empty skips the check.
        atol: see :func:`check_parity`.
        rtol: see :func:`check_parity`.
        min_agreement: see :func:`check_parity`.
        extra_metadata: keys added to the required metadata.

    Returns:
        The written path, its metadata, the parity numbers and the time taken.

    Raises:
        ExportError: export, ``onnx.checker`` or the parity check failed (nothing is written).
    """
    if opset < 17:
        raise ExportError(f"opset must be >= 17 (LayerNorm, Resize semantics), got {opset}")
    start = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    graph, multiple = unwrap(model)
    provenance = {
        "opset": opset,
        "exporter": exporter,
        "torch_version": torch.__version__.split("+")[0],
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    metadata = model_metadata(
        config, size_multiple=multiple, extra={**provenance, **dict(extra_metadata or {})}
    )
    # Work in a temporary folder beside ``out`` so the final move is an atomic rename.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        raw, staged = Path(tmp) / "raw.onnx", Path(tmp) / out.name
        trace_to_onnx(
            graph,
            raw,
            in_channels=metadata.in_channels,
            size_multiple=multiple,
            opset=opset,
            exporter=exporter,
        )
        proto = onnx.load(str(raw))
        write_metadata(proto, metadata)
        save_onnx(proto, staged)
        del proto
        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
        parity = None
        if parity_sizes:
            parity = check_parity(
                model, staged, sizes=parity_sizes, atol=atol, rtol=rtol, min_agreement=min_agreement
            )
        for item in Path(tmp).iterdir():
            if item.name != raw.name and not item.name.startswith("raw.onnx"):
                os.replace(item, out.parent / item.name)
    seconds = time.perf_counter() - start
    logger.info(
        "exported %s (%s, %s exporter, opset %d) in %.1fs",
        out,
        metadata.arch,
        exporter,
        opset,
        seconds,
    )
    return ExportResult(out, metadata, parity, seconds)


def export_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, **options: Any
) -> ExportResult:
    """Load a checkpoint (docs/contracts.md) and :func:`export_model` it.

    The checkpoint's best metric and epoch are recorded as ``best_metric`` and ``epoch``.
    ``tta="hflip"`` (``options``) exports the flip-averaged network (training/tta.py: two passes
    per image inside the graph), recorded as ``tta`` in the metadata.

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ValueError: not a checkpoint of this project; ExportError as in export_model.
    """
    from training.checkpoint import load_checkpoint, model_from_checkpoint
    from training.tta import with_flip_tta

    tta = options.pop("tta", "none")
    loaded = load_checkpoint(checkpoint)
    model = with_flip_tta(model_from_checkpoint(loaded), tta)
    extra: dict[str, Any] = {"source": Path(checkpoint).name, "tta": tta}
    for key, value in (("best_metric", loaded.best_metric), ("epoch", loaded.epoch)):
        if isinstance(value, int | float) and math.isfinite(value):
            extra[key] = value
    extra.update(options.pop("extra_metadata", None) or {})
    return export_model(model.eval(), loaded.config, out, extra_metadata=extra, **options)
