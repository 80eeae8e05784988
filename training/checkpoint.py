"""Checkpoints: what a ``.pt`` file of this project holds, written and read here only.

A checkpoint is one :class:`Checkpoint` (the weights, the full configuration, where the run
stood, and for ``--resume`` a :class:`TrainingState`). On disk it is a ``torch.save``d dict
of plain data (tensors, numbers, strings, lists, dicts: it loads with
``torch.load(weights_only=True)``), written atomically, whose ``version`` says its layout
(docs/contracts.md):

* version 1: the layout before versions were written (no ``version`` key); read as is;
* version 2: version 1 plus ``version``.

A file of a newer or unknown version raises :class:`CheckpointVersionError` naming it.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fcn
from training.config import TrainConfig
from training.data.datasets import DatasetInfo

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint of this project (the message says why)."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint whose layout version this code cannot read."""

    def __init__(self, path: str | os.PathLike, version: Any) -> None:
        super().__init__(
            f"{path} is a checkpoint of layout version {version!r}; this fcnseg reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer fcnseg wrote it? upgrade to read it)"
        )
        self.version = version


@dataclass
class TrainingState:
    """What ``--resume`` needs besides the weights to continue a run exactly.

    ``raw_model`` and ``ema_updates`` are set in runs with ``--ema``: the checkpoint's
    ``model`` is then the moving average, and ``raw_model`` the weights the optimizer steps.
    """

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]  # training.loop.optim.StepBudget.state_dict()
    scaler: dict[str, Any]
    rng: dict[str, Any]  # rng_state()
    raw_model: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0


@dataclass
class Checkpoint:
    """One checkpoint: weights, configuration, progress and (optionally) the training state.

    Attributes:
        model: the state dict that is validated, evaluated and exported.
        config: the full configuration (:func:`checkpoint_config`).
        epoch: epochs completed.
        step: optimizer steps completed.
        best_metric: the best validation mIoU so far (-inf before any).
        metrics: the last validation's ``Metrics.to_dict()``, or None.
        training: what ``--resume`` needs; None in a weights-only checkpoint.
        version: the layout version the file was written in.
    """

    model: dict[str, torch.Tensor]
    config: dict[str, Any]
    epoch: int = 0
    step: int = 0
    best_metric: float = -math.inf
    metrics: dict[str, Any] | None = None
    training: TrainingState | None = None
    version: int = CHECKPOINT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The on-disk layout (the current version)."""
        state: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "model": self.model,
            "config": self.config,
            "epoch": int(self.epoch),
            "step": int(self.step),
            "best_metric": float(self.best_metric),
            "metrics": self.metrics,
        }
        if self.training is not None:
            t = self.training
            state.update(optimizer=t.optimizer, scheduler=t.scheduler, scaler=t.scaler, rng=t.rng)
            if t.raw_model is not None:
                state.update(train_model=t.raw_model, ema_updates=int(t.ema_updates))
        return state

    @classmethod
    def from_dict(cls, state: Any, source: str | os.PathLike = "checkpoint") -> Checkpoint:
        """Read a loaded dict of any readable version.

        Raises:
            CheckpointVersionError: an unknown layout version.
            CheckpointError: not a checkpoint of this project.
        """
        if not isinstance(state, dict) or "model" not in state or "config" not in state:
            raise CheckpointError(
                f"{source} is not an fcn checkpoint (expected a dict with 'model' and 'config' keys)"
            )
        version = state.get("version", 1)
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise CheckpointVersionError(source, version)
        training = None
        if all(key in state for key in _TRAINING_KEYS):
            training = TrainingState(
                **{key: state[key] for key in _TRAINING_KEYS},
                raw_model=state.get("train_model"),
                ema_updates=int(state.get("ema_updates", 0)),
            )
        best = state.get("best_metric")
        return cls(
            model=state["model"],
            config=state["config"],
            epoch=int(state.get("epoch", 0)),
            step=int(state.get("step", 0)),
            best_metric=float(best) if best is not None else -math.inf,
            metrics=state.get("metrics"),
            training=training,
            version=int(version),
        )

    def training_state(self, source: str | os.PathLike = "checkpoint") -> TrainingState:
        """The state ``--resume`` needs.

        Raises:
            CheckpointError: a weights-only checkpoint (nothing to resume).
        """
        if self.training is None:
            raise CheckpointError(
                f"{source} holds weights but no training state ({', '.join(_TRAINING_KEYS)}); "
                "it can be evaluated or exported, not resumed"
            )
        return self.training


_TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file in the same folder, then rename).

    An interrupted write never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; a checkpoint should get the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` a copy of checkpoint ``src`` atomically (a hard link when possible).

    A hard link costs no I/O; since ``save_checkpoint`` replaces files by rename, a later
    save of ``src`` never changes ``dst``.
    """
    src, dst = Path(src), Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA random states as ``weights_only``-loadable data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when devices match)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint of any readable version safely (``weights_only=True``).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointVersionError: a layout version this code cannot read.
        CheckpointError: the file is not a checkpoint written by this project.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad files
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    return Checkpoint.from_dict(state, source=path)


def checkpoint_config(cfg: TrainConfig, info: DatasetInfo) -> dict[str, Any]:
    """The checkpoint's ``config`` (docs/contracts.md); each thing is stored once.

    * ``model``: what :func:`fcn.build_model` needs (arch, num_classes, in_channels, options);
    * ``data``: the ``DataConfig`` as the data was read: an absolute root, and what was
      inferred filled in (classes, palette, mask values, channels, mean/std), so a later
      evaluation or export (from any folder) reads the data and describes the model the
      same way;
    * ``train``: every other training option (``TrainConfig.to_dict()`` without ``data``);
      :func:`train_config` joins it with ``data`` again for ``--resume``.
    """
    data = cfg.data.to_dict()
    data.update(
        root=str(Path(cfg.data.root).resolve()),
        mask_values=info.mask_values,
        classes=list(info.classes),
        in_channels=info.in_channels,
        mean=list(info.mean),
        std=list(info.std),
        palette=[list(c) for c in info.palette],
        num_classes=info.num_classes,
    )
    train = cfg.to_dict()
    del train["data"]
    return {
        "model": {
            "arch": cfg.arch,
            "num_classes": info.num_classes,
            "in_channels": info.in_channels,
            "options": dict(cfg.model_options),
        },
        "data": data,
        "train": train,
    }


def train_config(config: dict[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint's ``config`` was written from.

    Raises:
        ValueError: the config holds no training options, or unknown ones.
    """
    train = config.get("train")
    if not isinstance(train, dict) or not isinstance(config.get("data"), dict):
        raise ValueError("no training options ('config.train' and 'config.data')")
    return TrainConfig.from_dict({**train, "data": config["data"]})


def model_from_checkpoint(checkpoint: Checkpoint, device: str | torch.device = "cpu") -> nn.Module:
    """The network of a loaded checkpoint, weights in place, in eval mode on ``device``.

    Pretrained-weight options are dropped: the checkpoint's state dict replaces them anyway,
    and rebuilding must never try to download anything.
    """
    model_config = checkpoint.config["model"]
    options = {
        k: v for k, v in dict(model_config.get("options", {})).items() if k not in _WEIGHT_OPTIONS
    }
    model = fcn.build_model(
        model_config["arch"],
        num_classes=int(model_config["num_classes"]),
        in_channels=int(model_config.get("in_channels", 3)),
        **options,
    )
    model.load_state_dict(checkpoint.model)
    return model.to(device).eval()


_WEIGHT_OPTIONS = {"weights", "encoder_weights"}


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint and return ``(model in eval mode, full training config)``."""
    checkpoint = load_checkpoint(path, map_location=device)
    return model_from_checkpoint(checkpoint, device), checkpoint.config
