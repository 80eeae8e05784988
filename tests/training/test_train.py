"""End to end: ``fcn train`` on the generated demo dataset writes a complete run folder."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from PIL import Image

from fcn.cli import main
from tests.training.tiny_runs import TINY_MODEL_ARGS

pytestmark = pytest.mark.usefixtures("single_thread")


def test_fcn_train_writes_checkpoints_metrics_and_pictures(demo_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    options = "--epochs 2 --epoch-size 8 --batch-size 4 --crop-size 48 --warmup 1 --device cpu"
    argv = ["train", "--data", str(demo_root), *TINY_MODEL_ARGS, *options.split()]
    code = main([*argv, "--workers", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "best mIoU" in printed and "background" in printed  # the per-class table
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [3, 6]  # 10 images -> 3 batches of 4
    for key in (
        "lr",
        "train_loss",
        "val_miou",
        "val_pixel_accuracy",
        "val_mean_accuracy",
        "val_dice",
        "val_iou_background",
        "val_iou_star",
        "images_per_s",
        "elapsed_s",
    ):
        assert rows[-1][key] != "" and math.isfinite(float(rows[-1][key])), key
    assert float(rows[-1]["lr"]) < float(rows[0]["lr"])  # cosine decay
    with Image.open(out / "predictions.png") as grid:
        assert grid.mode == "RGB" and grid.width > grid.height / 4
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 6
    best_epoch = max(rows, key=lambda r: float(r["val_miou"]))
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["best_metric"] == pytest.approx(float(best_epoch["val_miou"]), abs=1e-6)
    assert best["epoch"] == int(best_epoch["epoch"])


def test_training_learns_the_demo_task(trained_run) -> None:
    _, result = trained_run
    rows = result.history
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    # The best mIoU is the best epoch's (not, say, the last one's or a stale value).
    assert result.metrics is not None
    assert result.best_miou == pytest.approx(max(float(r["val_miou"]) for r in rows), abs=1e-6)


def test_time_budget_stops_cleanly_and_saves(demo_root, tmp_path) -> None:
    from tests.training.tiny_runs import tiny_config
    from training.loop.train import train

    cfg = tiny_config(demo_root, tmp_path, epochs=None, max_minutes=0.05, epoch_size=4000)
    result = train(cfg)  # 3 s: stops inside the first epoch, then evaluates and saves
    assert result.epochs == 1 and 0 < result.steps < 1000
    assert result.metrics is not None and result.elapsed_s < 60  # generous: shared CPUs
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == result.steps and state["scheduler"]["total"] == result.steps
