"""``--resume``: a run interrupted after epoch 1 and resumed ends exactly like one that ran
through (weights and validation metrics), even with a different number of DataLoader workers."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.training.tiny_runs import tiny_config
from training.loop.train import resume_config, train

pytestmark = pytest.mark.usefixtures("single_thread")


def final_state(path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("ema", [None, 0.9], ids=["raw", "ema"])
def test_resumed_run_matches_uninterrupted_run(demo_root, tmp_path, ema) -> None:
    full = train(tiny_config(demo_root, tmp_path / "full", workers=0, ema=ema))
    # Order and augmentation depend on (seed, epoch) only, so worker processes change nothing.
    part = train(tiny_config(demo_root, tmp_path / "part", workers=2, ema=ema), stop_after=1)
    assert (part.epochs, part.steps) == (1, 3)
    resumed_cfg = resume_config(tmp_path / "part" / "last.pt", out=str(tmp_path / "part"))
    resumed = train(resumed_cfg, resume=tmp_path / "part" / "last.pt")
    assert (resumed.epochs, resumed.steps) == (full.epochs, full.steps) == (2, 6)

    a, b = final_state(tmp_path / "full" / "last.pt"), final_state(tmp_path / "part" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for weights in ("model", "train_model") if ema else ("model",):
        for key, value in a[weights].items():
            torch.testing.assert_close(b[weights][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert b["metrics"]["confusion_matrix"] == a["metrics"]["confusion_matrix"]
    assert resumed.metrics.miou == pytest.approx(full.metrics.miou, abs=1e-9)
    assert b["best_metric"] == pytest.approx(a["best_metric"])
    # metrics.csv continues: one row per epoch, the same losses as the uninterrupted run
    rows = {}
    for name in ("full", "part"):
        with open(tmp_path / name / "metrics.csv", newline="") as f:
            rows[name] = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows["part"]] == ["1", "2"]
    for x, y in zip(rows["full"], rows["part"], strict=True):
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-5)


def test_resume_keeps_saved_options_and_rejects_unknown_overrides(trained_run) -> None:
    run, _ = trained_run
    cfg = resume_config(run / "last.pt", epochs=3, workers=0)
    assert (cfg.epochs, cfg.lr, cfg.data.augment.crop_size, cfg.arch) == (3, 3e-3, 48, "linknet")
    with pytest.raises(ValueError, match="unknown training option"):
        resume_config(run / "last.pt", colour="red")
