"""Tiny training runs on the generated demo dataset, shared by the training-loop tests.

``tiny_config(root, out, **overrides)`` is a ``TrainConfig`` that trains LinkNet/MobileNetV2
(4M parameters: small checkpoints, fast steps) on
48-pixel crops for 2 epochs of 3 steps (10 images, batch 4) (a few seconds on 2 CPU cores). ``trained_run`` runs
it once per session and returns the run folder; tests must not modify that folder.

``single_thread`` (import it into a test module, then ``pytestmark =
pytest.mark.usefixtures("single_thread")``) runs torch on one thread: on a shared 2-core
machine two OpenMP threads competing with another process spin and run 5-20x slower, while
these tiny models gain nothing from a second thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from training.config import TrainConfig
from training.data import DataConfig
from training.train import TrainResult, train
from training.transforms import AugmentConfig

_CACHE: dict[str, tuple[Path, TrainResult]] = {}


@pytest.fixture
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(root: Path, out: Path, **overrides: Any) -> TrainConfig:
    """The test run's options; ``overrides`` replace ``TrainConfig`` fields."""
    data = DataConfig(root=str(root), augment=AugmentConfig(crop_size=48), seed=0)
    options: dict[str, Any] = {
        "data": data, "out": str(out), "arch": "linknet",
        "model_options": {"encoder": "mobilenet_v2"}, "epochs": 2, "epoch_size": 8, "batch_size": 4,
        "warmup": "1", "device": "cpu", "lr": 3e-3, "plots": False,
    }  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)


def trained_run(
    tmp_path_factory: pytest.TempPathFactory, demo_root: Path
) -> tuple[Path, TrainResult]:
    """Train ``tiny_config`` once per test session; returns ``(run folder, result)``."""
    if "run" not in _CACHE:
        out = tmp_path_factory.mktemp("tiny-run")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # module-scoped callers run before ``single_thread``
        try:
            _CACHE["run"] = (out, train(tiny_config(demo_root, out)))
        finally:
            torch.set_num_threads(threads)
    return _CACHE["run"]
