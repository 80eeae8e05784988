"""Live progress (a bar on a terminal, log lines elsewhere) and the too-short-run advice."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

from fcn.cli import main
from tests.training.tiny_runs import TINY_MODEL_ARGS
from training.loop import progress
from training.loop.progress import Progress, chance_miou, clock, too_short_advice

pytestmark = pytest.mark.usefixtures("single_thread")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_plain_log_lines_at_an_interval(caplog) -> None:
    caplog.set_level(logging.INFO, logger="training.loop.progress")
    stream = io.StringIO()
    bar = Progress("epoch 1", total=5, unit="step", stream=stream, every=3600.0)
    for _ in range(5):
        bar.update(eta=83.0, fields=lambda: {"loss": "0.5000", "images/s": "3.20"})
    bar.close()
    assert stream.getvalue() == ""  # no bar characters in a log file
    lines = [r.getMessage() for r in caplog.records]
    # The first step is reported at once, the rest only every hour.
    assert lines == ["epoch 1: 1/5 steps, loss 0.5000, images/s 3.20, ETA 1:23"]
    bar = Progress("validating", total=4, unit="image", stream=stream, every=0.0)
    bar.update(2)
    bar.update(2)
    assert re.fullmatch(r"validating: 4/4 images, [\d.]+ images/s, ETA 0:00", lines_of(caplog)[-1])


def lines_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_on_a_terminal_progress_is_a_bar_with_loss_speed_and_eta(caplog) -> None:
    terminal = Terminal()
    bar = Progress("epoch 2", total=4, unit="step", stream=terminal)
    time.sleep(0.2)  # tqdm redraws at most every 0.1 s
    bar.update(eta=125.0, fields=lambda: {"loss": "0.2500"})
    time.sleep(0.2)
    bar.update(total=3)
    bar.close()
    shown = terminal.getvalue()
    assert "epoch 2" in shown and "loss=0.2500" in shown and "ETA=2:05" in shown
    assert "/3" in shown  # the planned total follows the budget
    assert not lines_of(caplog)


def test_clock() -> None:
    assert (clock(83), clock(3700), clock(None), clock(float("nan"))) == (
        "1:23",
        "1:01:40",
        "?",
        "?",
    )


def test_a_run_too_short_to_learn_is_told_so_with_a_budget_from_its_speed() -> None:
    # The run of the issue: 8 steps of 20 s in a 327 s run, mIoU 0.029.
    chance = chance_miou([[10, 0], [30, 0]])  # "class 1" everywhere: IoU 0.75, class 0: 0
    assert chance == pytest.approx(0.375)
    advice = too_short_advice(
        steps=8,
        warmup=30,
        miou=0.029,
        chance=0.087,
        elapsed=327.0,
        train_seconds=160.0,
        val_share=0.1,
    )
    assert advice is not None
    assert "only 8 optimizer steps" in advice and "warm-up (30 steps) not finished" in advice
    assert "mIoU 0.029, near chance (0.087" in advice
    # (327 - 160) s besides training + 500 steps x 20 s / 0.9 -> 188 minutes.
    assert "20.00 s per step" in advice and "--max-minutes 188" in advice
    learned = dict(warmup=30, elapsed=900.0, train_seconds=800.0, val_share=0.1)
    assert too_short_advice(steps=1400, miou=0.5, chance=0.087, **learned) is None
    assert "near chance" in too_short_advice(steps=1400, miou=0.1, chance=0.087, **learned)
    # Not one step fitted (on a busy machine the final evaluation took the whole budget).
    none = too_short_advice(steps=0, miou=0.39, chance=0.39, **{**learned, "elapsed": 114.0})
    assert "No step fitted" in none and "--max-minutes well above 2" in none


def test_fcn_train_reports_steps_validation_and_advice_in_a_log(
    demo_root, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # a line per step
    caplog.set_level(logging.INFO)
    argv = ["train", "--data", str(demo_root), *TINY_MODEL_ARGS, "--device", "cpu"]
    argv += ["--epochs", "2", "--epoch-size", "8", "--batch-size", "4", "--crop-size", "48"]
    assert main([*argv, "--no-plots", "--out", str(tmp_path / "run")]) == 0
    lines = lines_of(caplog)
    steps = [line for line in lines if line.startswith("epoch 2: ")]
    assert re.match(
        r"epoch 2: 1/3 steps, run step 4/6, loss [\d.]+, lr \S+, images/s [\d.]+, ETA ", steps[0]
    )
    assert any(re.match(r"validating: 2/2 images, [\d.]+ images/s", line) for line in lines)
    # a 6-step run trains without zoom, and says so once
    zoom = [line for line in lines if line.startswith("random zoom")]
    assert zoom == [
        "random zoom 1.00-1.00 (6 planned steps; none under 1,000 steps, the whole "
        "0.50-2.00 from 3,000)"
    ]
    advice = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(advice) == 1 and "only 6 optimizer steps" in advice[0].getMessage()
    assert re.search(r"--max-minutes \d+", advice[0].getMessage())
