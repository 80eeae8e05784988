"""Two CPU processes under ``torchrun`` (gloo): the all-reduced validation metrics equal a
single-process evaluation of the same weights, and only rank 0 writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.training.tiny_runs import TINY_MODEL_ARGS
from training.evaluate import evaluate_checkpoint


def test_two_process_training_metrics_equal_single_process(demo_root, tmp_path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = "-m torch.distributed.run --standalone --nproc-per-node 2 -m fcn train".split()
    options = "--epochs 1 --epoch-size 8 --batch-size 2 --crop-size 48 --device cpu --no-plots"
    command = [
        sys.executable,
        *launcher,
        "--data",
        str(demo_root),
        *TINY_MODEL_ARGS,
        *options.split(),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best mIoU") == 1  # rank 0 prints, rank 1 does not
    assert "rank 1/2" in result.stderr and "backend gloo" in result.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 3  # 10 training images -> 12 = 2 ranks x 3 steps x 2 images
    # 2 validation images: one per rank, all-reduced into one matrix.
    single = evaluate_checkpoint(out / "last.pt", batch_size=1, device="cpu")
    assert single.images == 2
    assert state["metrics"]["confusion_matrix"] == single.metrics.confusion_matrix
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.csv"]
