"""The training configuration: one dataclass holding every option of ``fcn train``.

``TrainConfig`` is what the CLI fills in and what the loop reads; ``checkpoint_config`` turns
it (plus what the data said: classes, palette, normalisation) into the JSON-serialisable
``config`` dict stored in every checkpoint (docs/contracts.md), and ``TrainConfig.from_dict``
reads it back for ``--resume``.

The defaults are the project's tuned settings (measured on ISBI 2012 EM, 2 CPU cores; see
bench/ and the README): AdamW with a short warmup and cosine decay to zero within the budget,
cross-entropy + Dice, 256-pixel crops, batch 8.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.data import DataConfig, DatasetInfo, check_known_fields

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
SCHEDULES: tuple[str, ...] = ("cosine", "poly", "constant")
LOSSES: tuple[str, ...] = ("ce", "ce+dice")

# Per-optimizer defaults used when lr / weight_decay are not given.
DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.01}
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-4, "sgd": 1e-4}


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
    model_options: dict[str, Any] = field(default_factory=lambda: {"encoder": "resnet18"})
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
    loss: str = "ce+dice"
    class_weights: list[float] | None = None  # cross-entropy weights, one per class
    amp: bool = False  # float16 mixed precision, CUDA only
    bf16: bool | None = None  # bfloat16 autocast on CPU; None: when the CPU has it natively
    # Runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int | None = None  # DataLoader worker processes; None: 0 on CPU, a few on GPU
    seed: int = 0
    channels_last: bool = True
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
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
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
        """The epoch limit; 50 when neither epochs nor minutes are given."""
        if self.epochs is None and self.max_minutes is None:
            return 50
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


def checkpoint_config(cfg: TrainConfig, info: DatasetInfo) -> dict[str, Any]:
    """The checkpoint's ``config``: model, what the data said, data options, training options.

    The top-level keys follow docs/contracts.md (``model``, ``classes``, ``palette``, ``mean``,
    ``std``, ``ignore_index``); ``data`` is the resolved ``DataConfig`` (so evaluation can
    rebuild the same split) and ``train`` is ``TrainConfig.to_dict()`` (so ``--resume`` can
    continue with the same options).
    """
    data = cfg.data.to_dict()
    # An absolute root and what was inferred, so a later evaluation (from any folder) reads
    # the data the same way.
    root = str(Path(cfg.data.root).resolve())
    train = cfg.to_dict()
    train["data"]["root"] = root
    data.update(
        root=root,
        mask_values=info.mask_values, classes=info.classes, in_channels=info.in_channels,
        mean=info.mean, std=info.std, palette=info.palette, num_classes=info.num_classes,
    )  # fmt: skip
    return {
        "model": {
            "arch": cfg.arch,
            "num_classes": info.num_classes,
            "in_channels": info.in_channels,
            "options": dict(cfg.model_options),
        },
        "classes": list(info.classes),
        "palette": [list(c) for c in info.palette],
        "mean": list(info.mean),
        "std": list(info.std),
        "ignore_index": info.ignore_index,
        "mask_values": info.mask_values,
        "data": data,
        "train": train,
    }
