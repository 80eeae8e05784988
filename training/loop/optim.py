"""Optimizer, learning-rate schedule and the step budget (epochs or minutes).

The learning rate is a pure function of ``(step, total_steps)`` (``get_lr``), set on the
optimizer before every step, nanoGPT style. With an epoch budget ``total_steps`` is exact.
With a time budget it is *planned* from measured time (``StepBudget``) and re-planned as
training goes, so warmup + cosine/poly decay end at the deadline rather than being cut off;
in distributed runs rank 0's plan is broadcast, so all ranks use the same learning rate and
stop at the same step.
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

    With an epoch budget ``total`` is exact. With a time budget the deadline is counted from
    ``started`` (the start of ``train``: data loading counts) and ``total`` is re-planned
    before every step from the measured seconds per training step (the mean of the last few;
    the run's first step, which pays one-time warm-ups, is dropped once others exist), the
    measured cost of epoch ends (checkpoints, in-budget validations) per step, and
    ``reserve``: the seconds kept for the final evaluation and save. A step is taken when
    more than half of it fits before the reserve, so the run ends within half a step of
    the deadline; warmup and decay are planned over the steps that fit.

    Args:
        base_lr: the peak learning rate.
        schedule: ``cosine``, ``poly`` or ``constant`` (see :func:`get_lr`).
        warmup: steps (``"30"``) or epochs (``"2e"``).
        epochs: the epoch limit, or None (then ``max_minutes`` limits the run).
        max_minutes: the time limit, or None.
        steps_per_epoch: optimizer steps in one epoch.
        refresh: re-plan a time budget every this many steps.
        started: ``time.perf_counter()`` when the run started (default: now).
    """

    RECENT = 20  # steps in the moving mean of the step time (a busy CPU changes speed)

    def __init__(
        self,
        *,
        base_lr: float,
        schedule: str,
        warmup: str,
        epochs: int | None,
        max_minutes: float | None,
        steps_per_epoch: int,
        refresh: int = 1,
        started: float | None = None,
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
        self._start = started if started is not None else time.perf_counter()
        self._last: tuple[int, float] | None = None  # (step, elapsed) at the last observe
        self._step_seconds: list[float] = []
        self._overhead = 0.0  # seconds of epoch-end work (checkpoints, validations)
        self._steps_run = 0  # steps timed by this process (for the overhead per step)

    def elapsed(self) -> float:
        """Seconds so far, including those before a resume."""
        return self.elapsed_before + time.perf_counter() - self._start

    def lr(self, step: int) -> float:
        return get_lr(
            step,
            base_lr=self.base_lr,
            schedule=self.schedule,
            warmup=self.planned_warmup(),
            total=self.total,
        )

    def planned_warmup(self) -> int:
        """The warmup steps: at most a quarter of the planned run (a short run must not spend
        itself warming up)."""
        return min(self.warmup, self.total // 4)

    def planned_steps(self) -> int | None:
        """The run's planned length: exact with an epoch budget; with a time budget, the plan
        from the measured speed, or None before a step has been timed."""
        if self.seconds is not None and self.seconds_per_step() is None:
            return None
        return self.total

    def done(self, step: int) -> bool:
        return step >= self.total

    def needs_refresh(self, step: int) -> bool:
        """Whether ``observe`` should run before ``step`` (same answer on every rank)."""
        return self.seconds is not None and step % self.refresh == 0

    def seconds_per_step(self) -> float | None:
        """The recent mean training-step time, or None before one was timed."""
        times = self._step_seconds
        if len(times) > 1:
            times = times[1:]  # the process's first step pays one-time warm-ups
        recent = times[-self.RECENT :]
        return sum(recent) / len(recent) if recent else None

    def pause(self) -> None:
        """The time until the next ``observe`` is no training step (an epoch end)."""
        self._last = None

    def add_overhead(self, seconds: float) -> None:
        """Record epoch-end work that recurs every epoch (checkpoint, in-budget validation)."""
        self._overhead += seconds

    def observe(self, step: int) -> int | None:
        """Time the steps since the last call and re-plan ``total`` (time budgets only).

        Returns:
            The plan (rank 0 broadcasts it to the others), or None without a time budget.
        """
        if self.seconds is None:
            return None
        now = self.elapsed()
        if self._last is not None and step > self._last[0]:
            steps = step - self._last[0]
            self._step_seconds += [(now - self._last[1]) / steps] * steps
            self._steps_run += steps
        self._last = (step, now)
        per_step = self.seconds_per_step()
        left = self.seconds - self.reserve - now
        if per_step is None:
            if left <= 0:
                self.set_total(step)
            return self.total
        if left < per_step / 2:
            self.set_total(step)  # out of time: stop now
            return self.total
        overhead = self._overhead / self._steps_run if self._steps_run else 0.0
        estimate = step + max(1, int(left / (per_step + overhead) + 0.5))
        if self.epoch_steps is not None:
            estimate = min(estimate, self.epoch_steps)
        self.set_total(estimate)
        return self.total

    def time_left(self) -> float | None:
        """Seconds before the reserve, less one training step (None without a time budget)."""
        if self.seconds is None:
            return None
        return self.seconds - self.reserve - self.elapsed() - (self.seconds_per_step() or 0.0)

    def eta(self, step: int, per_step: float) -> float:
        """Seconds until the run ends: the deadline, or the steps left at ``per_step``."""
        if self.seconds is not None:
            return max(0.0, self.seconds - self.elapsed())
        return max(0, self.total - step) * per_step

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
