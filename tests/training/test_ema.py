"""The weights' moving average (training/loop/ema.py) and what a run saves with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.checkpoint import load_checkpoint
from training.loop.ema import build_ema, warmed_decay
from training.loop.train import train

from .tiny_runs import tiny_config


def test_average_follows_the_warmed_decay_over_parameters_and_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = build_ema(model, 0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for update in range(5):
        ema.update_parameters(model)
        current = model.state_dict()
        if update == 0:  # the first update copies
            expected = {k: v.clone() for k, v in current.items()}
        else:
            decay = warmed_decay(0.9, update)
            for key, value in current.items():
                if value.is_floating_point():
                    expected[key] = decay * expected[key] + (1 - decay) * value
                else:
                    expected[key] = value.clone()
        for key, value in ema.module.state_dict().items():
            torch.testing.assert_close(value, expected[key], msg=key)
        with torch.no_grad():  # a "step": new weights and running statistics
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
    assert warmed_decay(0.9, 0) == pytest.approx(0.1) and warmed_decay(0.9, 1000) == 0.9


def test_bad_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="ema"):
        build_ema(nn.Linear(1, 1), 1.0)


def test_a_run_saves_the_average_and_keeps_the_raw_weights_for_resuming(
    demo_root, tmp_path
) -> None:
    result = train(tiny_config(demo_root, tmp_path / "run", workers=0, ema=0.95))
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    raw = checkpoint.training.raw_model
    assert checkpoint.training.ema_updates == result.steps == 6
    assert checkpoint.model.keys() == raw.keys()
    differ = [
        k
        for k, v in checkpoint.model.items()
        if v.is_floating_point() and not torch.equal(v, raw[k])
    ]
    assert differ, "the saved weights are the raw ones, not their average"
