"""Time budgets that hold: the validation plan, and a run whose validation is slow."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch
from torch import nn

from fcn import registry
from tests.training.tiny_runs import tiny_config
from training.config import AugmentConfig, DataConfig
from training.loop.validation import CHEAP_SECONDS, ValidationPlan, image_work, spread_order

pytestmark = pytest.mark.usefixtures("single_thread")


def test_spread_order_is_a_permutation_whose_prefixes_cover_the_set() -> None:
    for count in (1, 2, 5, 16, 33):
        assert sorted(spread_order(count)) == list(range(count))
    assert spread_order(16)[:4] == [0, 8, 4, 12]


def test_tiled_images_count_their_overlap_as_work() -> None:
    assert image_work(100, 200) == 20_000
    big = image_work(3000, 3000)  # tiled: 1024-pixel tiles overlapping by 128
    assert 3000 * 3000 < big <= 4 * 4 * 1024 * 1024


def test_the_plan_validates_what_fits_shrinks_or_skips_and_always_scores_the_last() -> None:
    plan = ValidationPlan([(100, 100)] * 8, share=0.1)  # 8 images of 10,000 pixels
    plan.measured(1.0, [0])  # 1 s per image, measured
    assert plan.estimate() == pytest.approx(8.0)
    every = list(range(8))
    assert plan.choose(last=False, elapsed=100.0, time_left=None) == every  # 8 s <= 10 s
    # 10% of 40 s = 4 s: half the set, spread over it (not its first half).
    half = plan.choose(last=False, elapsed=40.0, time_left=None)
    assert half == sorted(spread_order(8)[:4]) and half != [0, 1, 2, 3]
    # Under a quarter of the set fits: skip.
    assert plan.choose(last=False, elapsed=15.0, time_left=None) == []
    # The share would allow it, the time left before the final evaluation does not (all).
    assert plan.choose(last=False, elapsed=1000.0, time_left=3.0) == sorted(spread_order(8)[:3])
    assert plan.choose(last=False, elapsed=1000.0, time_left=1.5) == []
    # The final evaluation scores every image, whatever it costs.
    assert plan.choose(last=True, elapsed=0.0, time_left=0.0) == every
    plan.spent(16.0, every)  # slower than measured: the rate follows
    assert plan.estimate() == pytest.approx(16.0) and plan.count == 1
    # 10% of 200 s, less the 16 s spent: 4 s, two images now.
    assert plan.choose(last=False, elapsed=200.0, time_left=None) == sorted(spread_order(8)[:2])
    assert plan.choose(last=False, elapsed=190.0, time_left=None) == []
    cheap = ValidationPlan([(10, 10)] * 2, share=0.01)
    cheap.measured(CHEAP_SECONDS / 4, [0])
    assert cheap.choose(last=False, elapsed=1.0, time_left=None) == [0, 1]


class SlowToPredict(nn.Module):
    """A per-pixel linear classifier whose evaluation sleeps ``seconds_per_image`` per
    image: a validation set that is slow to predict, as large images on a slow CPU are."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, seconds_per_image: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.seconds_per_image = seconds_per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(self.seconds_per_image * x.shape[0])
        return self.conv(x)


def test_a_run_with_a_slow_validation_set_ends_on_time(
    make_folder_dataset, tmp_path, monkeypatch
) -> None:
    """0.5 minutes, 10 validation images of 2 s each: the final evaluation (20 s, exact) is
    inside the budget, and the run ends within max(5% of it, 15 s) of the deadline."""
    from training.loop.train import train

    monkeypatch.setitem(registry._MODELS, "slow-to-predict", SlowToPredict)
    root = make_folder_dataset(n=20, size=(40, 40), values=(0, 255))
    data = DataConfig(
        root=str(root), val_fraction=0.5, mask_values=[0, 255], augment=AugmentConfig(crop_size=32)
    )
    minutes = 0.5
    cfg = tiny_config(
        root,
        tmp_path / "run",
        data=data,
        arch="slow-to-predict",
        model_options={"seconds_per_image": 2.0},
        epochs=None,
        max_minutes=minutes,
        epoch_size=4000,  # one long epoch: the budget, not the epoch, ends training
        warmup="30",
    )
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    print(f"wall {wall:.1f} s, elapsed {result.elapsed_s:.1f} s, val {result.val_seconds:.1f} s")
    assert abs(wall - 60 * minutes) <= max(0.05 * 60 * minutes, 15.0), wall
    # The final model was scored exactly: every pixel of the 10 validation images.
    assert result.metrics is not None and result.metrics.pixels == 10 * 40 * 40
    assert result.steps > 0 and result.validations == 1
    # Warmup and decay were planned over the steps that fit: warmup over, lr decayed.
    last = result.history[-1]
    assert float(last["lr"]) < 0.05 * cfg.base_lr
    assert int(last["val_images"]) == 10 and math.isfinite(float(last["val_miou"]))


def test_a_final_evaluation_longer_than_the_budget_is_announced_and_still_exact(
    make_folder_dataset, tmp_path, monkeypatch, caplog
) -> None:
    from training.loop.train import train

    monkeypatch.setitem(registry._MODELS, "slow-to-predict", SlowToPredict)
    root = make_folder_dataset(n=8, size=(40, 40), values=(0, 255))
    data = DataConfig(
        root=str(root), val_fraction=0.5, mask_values=[0, 255], augment=AugmentConfig(crop_size=32)
    )
    cfg = tiny_config(
        root,
        tmp_path / "run",
        data=data,
        arch="slow-to-predict",
        model_options={"seconds_per_image": 1.0},
        epochs=None,
        max_minutes=0.05,  # 3 s; the 4 validation images take 4 s
        batch_size=1,
    )
    caplog.set_level(logging.INFO)
    result = train(cfg)
    late = [r.getMessage() for r in caplog.records if "will end about" in r.getMessage()]
    assert len(late) == 1 and "final evaluation of 4 validation images" in late[0]
    assert result.metrics is not None and result.metrics.pixels == 4 * 40 * 40
    assert result.advice is not None and "too short to learn" in result.advice
