"""Optimizer, learning-rate schedule and the step budget (epochs or minutes).

The learning rate is a pure function of ``(step, total_steps)`` (``get_lr``), set on the
optimizer before every step, nanoGPT style. With an epoch budget ``total_steps`` is exact.
With a time budget it is *estimated* from the measured seconds per step (evaluation time
included) and refined as training goes, so warmup + cosine/poly decay end at the deadline
rather than being cut off. The estimate changes only every ``refresh`` steps and at epoch
ends; in distributed runs rank 0's estimate is broadcast, so all ranks use the same learning
rate and stop at the same step.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig, parse_warmup

logger = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum; no weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.base_weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=False)
    return torch.optim.AdamW(groups, lr=cfg.base_lr)


def get_lr(step: int, *, base_lr: float, schedule: str, warmup: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear warmup from ``base_lr / warmup`` over ``warmup`` steps, then ``cosine`` (to 0),
    ``poly`` (power 0.9, to 0) or ``constant`` until ``total``.
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (1.0 - progress) ** 0.9


class StepBudget:
    """How many optimizer steps the run gets, and the learning rate of each.

    Args:
        base_lr: the peak learning rate.
        schedule: ``cosine``, ``poly`` or ``constant`` (see :func:`get_lr`).
        warmup: steps (``"30"``) or epochs (``"2e"``).
        epochs: the epoch limit, or None (then ``max_minutes`` limits the run).
        max_minutes: the time limit, or None.
        steps_per_epoch: optimizer steps in one epoch.
        refresh: re-estimate a time budget every this many steps.
    """

    def __init__(
        self,
        *,
        base_lr: float,
        schedule: str,
        warmup: str,
        epochs: int | None,
        max_minutes: float | None,
        steps_per_epoch: int,
        refresh: int = 10,
    ) -> None:
        self.base_lr = base_lr
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.refresh = refresh
        self.epoch_steps = epochs * steps_per_epoch if epochs is not None else None
        self.seconds = max_minutes * 60.0 if max_minutes is not None else None
        count, unit = parse_warmup(warmup)
        self.warmup = count * steps_per_epoch if unit == "epochs" else count
        # Until measured, a time budget assumes it has the epoch budget (or plenty of steps).
        self.total = self.epoch_steps if self.epoch_steps is not None else 10**9
        self.elapsed_before = 0.0  # seconds spent before a resume
        self.reserve = 0.0  # seconds kept for the final evaluation and checkpoint
        self._start = time.perf_counter()
        self._mark: tuple[int, float] | None = None  # (step, elapsed) where timing started
        self._calls = 0

    def elapsed(self) -> float:
        """Training seconds so far, including those before a resume."""
        return self.elapsed_before + time.perf_counter() - self._start

    def lr(self, step: int) -> float:
        return get_lr(
            step,
            base_lr=self.base_lr,
            schedule=self.schedule,
            # A short run must not spend itself warming up: at most a quarter of it.
            warmup=min(self.warmup, self.total // 4),
            total=self.total,
        )

    def done(self, step: int) -> bool:
        return step >= self.total

    def needs_refresh(self, step: int) -> bool:
        """Whether ``observe`` should run before ``step`` (same answer on every rank)."""
        return self.seconds is not None and (step % self.refresh == 0 or self._calls < 3)

    def observe(self, step: int) -> int | None:
        """Re-estimate ``total`` from the time per step so far (time budgets only).

        The first call after (re)starting only checks the deadline; the second starts the
        clock, so the first step's allocator warm-up and worker start are not extrapolated;
        later calls estimate ``total``.

        Returns:
            The estimate (rank 0 broadcasts it to the others), or None without a time budget.
        """
        if self.seconds is None:
            return None
        self._calls += 1
        elapsed = self.elapsed()
        if elapsed >= self.seconds - self.reserve:
            self.set_total(step)  # out of time: stop now
        elif self._mark is None:
            if self._calls >= 2:
                self._mark = (step, elapsed)
        elif step > self._mark[0]:
            mark_step, mark_time = self._mark
            per_step = (elapsed - mark_time) / (step - mark_step)
            estimate = step + int((self.seconds - self.reserve - elapsed) / per_step)
            if self.epoch_steps is not None:
                estimate = min(estimate, self.epoch_steps)
            self.set_total(estimate)
        return self.total

    def set_total(self, total: int) -> None:
        self.total = max(0, int(total))

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "warmup": self.warmup,
            "total": self.total,
            "elapsed": self.elapsed(),
            "reserve": self.reserve,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run: keep its time spent; an epoch budget recomputes ``total``."""
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.reserve = float(state.get("reserve", 0.0))
        self._start = time.perf_counter()
        if self.seconds is not None:
            self.total = int(state.get("total", self.total))
