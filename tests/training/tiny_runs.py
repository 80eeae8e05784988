"""The tiny training run shared by the training-loop tests.

``tiny_config(root, out, **overrides)`` is a ``TrainConfig`` that trains LinkNet/MobileNetV2
(4M parameters: small checkpoints, fast steps) on 48-pixel crops for 2 epochs of 3 steps
(10 images, batch 4): a few seconds on 2 CPU cores. The session fixture ``trained_run``
(tests/training/conftest.py) runs it once; tests must not modify its folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import AugmentConfig, DataConfig, TrainConfig

# The tiny run's model on the ``fcn train`` command line.
TINY_MODEL_ARGS = ("--arch", "linknet", "--encoder", "mobilenet_v2")


def tiny_config(root: Path, out: Path, **overrides: Any) -> TrainConfig:
    """The test run's options; ``overrides`` replace ``TrainConfig`` fields."""
    data = DataConfig(root=str(root), augment=AugmentConfig(crop_size=48), seed=0)
    options: dict[str, Any] = {
        "data": data,
        "out": str(out),
        "arch": "linknet",
        "model_options": {"encoder": "mobilenet_v2"},
        "epochs": 2,
        "epoch_size": 8,
        "batch_size": 4,
        "warmup": "1",
        "device": "cpu",
        "lr": 3e-3,
        "plots": False,
    }
    options.update(overrides)
    return TrainConfig(**options)
