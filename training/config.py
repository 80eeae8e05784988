"""The training configuration: the dataclasses holding every option of ``fcn train``.

``TrainConfig`` (with its ``DataConfig`` and ``AugmentConfig``) is what the CLI fills in and
what the loop reads; ``training.checkpoint.checkpoint_config`` stores it in every checkpoint
(docs/contracts.md) and ``TrainConfig.from_dict`` reads it back for ``--resume``.

This module imports neither torch nor numpy, so the ``fcn`` command reads its choices and
defaults from here without loading the training stack.

The defaults are the project's tuned settings (how they were chosen, and on which CPUs:
docs/benchmarks.md): AdamW with a short warmup and cosine decay to zero within the budget,
cross-entropy + Dice, 256-pixel crops, batch 8.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
SCHEDULES: tuple[str, ...] = ("cosine", "poly", "constant")
LOSSES: tuple[str, ...] = ("ce", "ce+dice", "ce+lovasz")
LAYOUTS: tuple[str, ...] = ("auto", "folder", "split", "voc")
IN_CHANNELS: tuple[int, ...] = (1, 3, 4)  # grey, RGB, RGBA
# Evaluation subsets (training.evaluate) and ONNX exporters (training.export.onnx); the first
# of each is the default.
EVAL_SPLITS: tuple[str, ...] = ("val", "all", "train")
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
# Test-time augmentation of ``fcn evaluate --tta`` and ``fcn export --tta`` (training/tta.py).
TTA_MODES: tuple[str, ...] = ("none", "hflip")
# The encoder smp architectures get when none is given (the registry's own default is
# resnet34; resnet18 is the project's tuned default).
DEFAULT_ENCODER = "resnet18"
# The epoch limit when neither epochs nor max_minutes is given.
DEFAULT_EPOCHS = 50

# Per-optimizer defaults used when lr / weight_decay are not given.
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.01}
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-4, "sgd": 1e-4}


class OptionError(ValueError):
    """A problem the caller fixes by changing the named options.

    The message speaks of the problem (and of option names as the Python API spells them);
    ``options`` lists those names so that a front end can point at its own spelling: the
    ``fcn`` command appends its flags (``mask_values`` -> ``--mask-values``).
    """

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = tuple(options)


def check_known_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} options {unknown}; valid ones: {sorted(known)}")


def default_of(cls: type, name: str) -> Any:
    """The default value of dataclass field ``name`` (for help texts)."""
    for f in fields(cls):
        if f.name == name:
            return f.default_factory() if callable(f.default_factory) else f.default
    raise KeyError(name)


@dataclass
class AugmentConfig:
    """Training augmentation options (probabilities are per sample)."""

    crop_size: int = 256
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    vflip: float = 0.0
    brightness: float = 0.2  # +- fraction of the maximum pixel value
    contrast: float = 0.2  # +- fraction
    saturation: float = 0.0  # RGB only
    hue: float = 0.0  # RGB only, fraction of the hue circle
    color_p: float = 0.5  # probability of the colour jitter
    # Probability that a crop is centred on a pixel of one class, drawn uniformly from the
    # classes present in the image (rare and thin classes get seen); otherwise uniform.
    class_crop_p: float = 0.5
    # Narrow the zoom range for short runs (training/loop/zoom.py): none below 1,000 planned
    # steps, all of ``scale_range`` from 3,000. Off when ``--scale-range`` is given.
    zoom_by_length: bool = True

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0.0 <= self.class_crop_p <= 1.0:
            raise ValueError(f"class_crop_p must be in [0, 1], got {self.class_crop_p}")
        if self.crop_size < 1 or not 0 < low <= high:
            raise ValueError(
                f"need crop_size >= 1 and 0 < scale_range[0] <= scale_range[1], got "
                f"crop_size={self.crop_size}, scale_range={self.scale_range}"
            )
        self.scale_range = (float(low), float(high))


@dataclass
class DataConfig:
    """How to find, read and augment a dataset (every field is JSON-serialisable)."""

    root: str
    layout: str = "auto"  # one of LAYOUTS
    val_fraction: float = 0.2  # folder layout only
    seed: int = 0  # the train/val split and the augmentation streams
    mask_values: list[int] | None = None  # raw mask value of class i; None: masks hold indices
    ignore_index: int = 255
    classes: list[str] | None = None
    num_classes: int | None = None  # when neither classes nor mask_values say it
    palette: list[list[int]] | None = None
    in_channels: int | None = None  # None: from the first image
    mean: list[float] | None = None  # None: ImageNet-based defaults (or computed)
    std: list[float] | None = None
    compute_stats: bool = False  # mean/std from the training images
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_mb: int = 2048  # decode up front and keep in memory when the data fits

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        data["augment"]["scale_range"] = list(self.augment.scale_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        check_known_fields(cls, data, "data")
        data = dict(data)
        if isinstance(data.get("augment"), dict):
            augment = dict(data["augment"])
            augment["scale_range"] = tuple(augment.get("scale_range", (0.5, 2.0)))
            # written before the zoom followed the run's length: it trained with the whole range
            augment.setdefault("zoom_by_length", False)
            data["augment"] = AugmentConfig(**augment)
        return cls(**data)


def parse_warmup(text: str | int) -> tuple[int, str]:
    """``"200"`` -> ``(200, "steps")``; ``"2e"`` or ``"2ep"`` -> ``(2, "epochs")``.

    Raises:
        ValueError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(e|ep|epoch|epochs|s|step|steps)?\s*", str(text))
    if not match:
        raise ValueError(f"warmup must be a number of steps ('200') or epochs ('2e'), got {text!r}")
    unit = "epochs" if (match.group(2) or "s").startswith("e") else "steps"
    return int(match.group(1)), unit


@dataclass
class TrainConfig:
    """Every option of a training run (JSON-serialisable through ``to_dict``)."""

    data: DataConfig
    out: str = "runs/train"
    # Model: fcn.build_model(arch, num_classes=<from data>, in_channels=<from data>, **options)
    arch: str = "unet"
    model_options: dict[str, Any] = field(default_factory=lambda: {"encoder": DEFAULT_ENCODER})
    # Start from a trained model (training/init): "default", an exported .onnx or a .pt; its
    # architecture, options and normalisation replace the ones above.
    init: str | None = None
    # Budget: epochs, minutes or both (whichever ends first). Neither: 50 epochs.
    epochs: int | None = None
    max_minutes: float | None = None
    epoch_size: int = 256  # at least this many training images per epoch (small sets repeat)
    batch_size: int = 8
    # Optimisation
    optimizer: str = "adamw"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"
    warmup: str = "30"  # steps ("30") or epochs ("2e")
    grad_clip: float | None = None  # max gradient L2 norm
    # Decay of the exponential moving average of the weights that is validated, saved and
    # exported (training/loop/ema.py); None trains and saves the raw weights.
    ema: float | None = None
    loss: str = "ce+dice"
    class_weights: list[float] | None = None  # cross-entropy weights, one per class
    amp: bool = False  # float16 mixed precision, CUDA only
    bf16: bool | None = None  # bfloat16 autocast on CPU; None: when the CPU has it natively
    # Runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int | None = None  # DataLoader worker processes; None: 0 on CPU, a few on GPU
    seed: int = 0
    channels_last: bool = True
    # Validate after an epoch only while validation stays within this share of the elapsed
    # time (and always after the last epoch); 1.0 validates every epoch.
    val_share: float = 0.1
    grid_images: int = 4  # validation samples in the per-epoch prediction grid
    plots: bool = True  # training-curve and prediction-grid PNGs

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.batch_size < 1 or self.epoch_size < 0 or (self.workers or 0) < 0:
            raise ValueError("batch_size must be >= 1, epoch_size and workers >= 0")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.val_share <= 1.0:
            raise ValueError(f"val_share must be in (0, 1], got {self.val_share}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be in (0, 1), got {self.ema}")
        parse_warmup(self.warmup)
        self.warmup = str(self.warmup)

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def base_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return DEFAULT_WEIGHT_DECAY[self.optimizer]

    @property
    def budget_epochs(self) -> int | None:
        """The epoch limit; DEFAULT_EPOCHS when neither epochs nor minutes are given."""
        if self.epochs is None and self.max_minutes is None:
            return DEFAULT_EPOCHS
        return self.epochs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = self.data.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` listing the valid ones."""
        check_known_fields(cls, data, "training")
        values = dict(data)
        values["data"] = DataConfig.from_dict(values["data"])
        return cls(**values)
