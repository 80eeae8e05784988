"""Checkpoints: one ``torch.save``d dict of plain data, written atomically.

See docs/contracts.md for the layout. Everything in a checkpoint is a tensor, number, string,
list or dict, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fcn
from training.config import TrainConfig
from training.data.datasets import DatasetInfo


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then rename).

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
            torch.save(state, f)
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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict safely (``weights_only=True``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a checkpoint written by this project.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad files
        raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(
            f"{path} is not an fcn checkpoint (expected a dict with 'model' and 'config' keys)"
        )
    return state


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


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The network of a loaded checkpoint, weights in place, in eval mode on ``device``.

    Pretrained-weight options are dropped: the checkpoint's state dict replaces them anyway,
    and rebuilding must never try to download anything.
    """
    model_config = state["config"]["model"]
    options = {
        k: v for k, v in dict(model_config.get("options", {})).items() if k not in _WEIGHT_OPTIONS
    }
    model = fcn.build_model(
        model_config["arch"],
        num_classes=int(model_config["num_classes"]),
        in_channels=int(model_config.get("in_channels", 3)),
        **options,
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval()


_WEIGHT_OPTIONS = {"weights", "encoder_weights"}


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint and return ``(model in eval mode, full training config)``."""
    state = load_checkpoint(path, map_location=device)
    return model_from_state(state, device), state["config"]
