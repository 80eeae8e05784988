"""Live progress of training steps and validations, and the end-of-run advice.

On a terminal a tqdm bar shows the step (of those planned), loss, images/s and the run's
ETA; elsewhere (a log file, CI, ``nohup``) a bar would be one endless line, so a plain log
line is written instead: after the first step, then every ``LINE_SECONDS``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

logger = logging.getLogger(__name__)

# Seconds between two plain progress lines when the output is not a terminal.
LINE_SECONDS = 20.0
# Optimizer steps a run should get to learn something useful (docs/training.md says why).
LEARNING_STEPS = 500
# Below this many steps a run is too short whatever its metrics say.
MIN_STEPS = 100


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def clock(seconds: float | None) -> str:
    """``83`` -> ``1:23``; ``3700`` -> ``1:01:40``; None or NaN -> ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One phase's progress (an epoch's steps, a validation's images).

    Args:
        description: the label (``epoch 3``, ``validating``).
        total: how many units the phase should take (may change: ``update(total=...)``).
        unit: ``step`` or ``image``.
        stream: where the bar goes (default stderr); a non-terminal gets log lines.
        every: seconds between log lines (default ``LINE_SECONDS``).
    """

    def __init__(
        self,
        description: str,
        *,
        total: int,
        unit: str,
        stream: TextIO | None = None,
        every: float | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.every = LINE_SECONDS if every is None else every
        self.done = 0
        self.start = time.perf_counter()
        self.next_line = self.start  # the first update writes a line
        self.next_postfix = self.start
        stream = stream or sys.stderr
        self.bar = None
        if is_terminal(stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=description,
                unit=unit,
                file=stream,
                leave=False,
                dynamic_ncols=True,
            )

    def update(
        self,
        count: int = 1,
        *,
        total: int | None = None,
        eta: float | None = None,
        fields: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        """``count`` more units done.

        Args:
            count: units done since the last call.
            total: a new planned total.
            eta: seconds until the run (not just this phase) ends, when known.
            fields: extra ``name -> text`` (loss, lr, images/s); called only when shown,
                since reading a loss back can stall a GPU.
        """
        self.done += count
        if total is not None:
            self.total = total
        now = time.perf_counter()
        if self.bar is not None:
            if total is not None:
                self.bar.total = total
            if (fields is not None or eta is not None) and now >= self.next_postfix:
                self.next_postfix = now + 0.5  # the fields may cost a host sync
                shown = dict(fields() if fields is not None else {})
                if eta is not None:
                    shown["ETA"] = clock(eta)
                self.bar.set_postfix(shown, refresh=False)
            self.bar.update(count)
        elif now >= self.next_line:
            self.next_line = now + self.every
            self._line(now, eta, fields() if fields is not None else {})

    def _line(self, now: float, eta: float | None, fields: dict[str, Any]) -> None:
        rate = self.done / (now - self.start) if now > self.start else 0.0
        if eta is None and rate > 0:
            eta = (self.total - self.done) / rate
        parts = [f"{self.description}: {self.done}/{self.total} {self.unit}s"]
        parts += [f"{name} {value}" for name, value in fields.items()]
        if self.unit == "image":
            parts.append(f"{rate:.2f} images/s")
        parts.append(f"ETA {clock(eta)}")
        logger.info(", ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def chance_miou(confusion_matrix: list[list[int]]) -> float | None:
    """The mIoU of predicting the most frequent class everywhere (rows: ground truth).

    That class's IoU is its pixel share; every other class present scores 0.
    """
    counts = [sum(row) for row in confusion_matrix]
    total, present = sum(counts), sum(1 for c in counts if c)
    return max(counts) / total / present if total else None


def too_short_advice(
    *,
    steps: int,
    warmup: int,
    miou: float | None,
    chance: float | None,
    elapsed: float,
    train_seconds: float,
    val_share: float,
) -> str | None:
    """What to say when a run was too short to learn (None when it was not).

    Too short: under ``MIN_STEPS`` steps, the configured warmup not finished, or the final
    validation mIoU under twice that of predicting the most frequent class everywhere. The
    suggested budget gives ``LEARNING_STEPS`` steps at this run's measured speed, plus what
    this run spent besides training (data loading, the final evaluation) and the share of
    in-budget validations.
    """
    reasons = []
    if steps < MIN_STEPS:
        reasons.append(f"only {steps} optimizer step{'' if steps == 1 else 's'}")
    if steps < warmup:
        reasons.append(f"the learning-rate warm-up ({warmup} steps) not finished")
    if miou is not None and chance is not None and math.isfinite(miou) and miou < 2 * chance:
        reasons.append(
            f"validation mIoU {miou:.3f}, near chance ({chance:.3f}: the most frequent class "
            "everywhere)"
        )
    if not reasons:
        return None
    text = "this run was too short to learn: " + "; ".join(reasons) + "."
    if not steps:
        text += (
            f" No step fitted: setting up and the final evaluation took {elapsed:.0f} s; give "
            f"--max-minutes well above {math.ceil(elapsed / 60)}."
        )
    elif train_seconds > 0:
        per_step = train_seconds / steps
        other = max(0.0, elapsed - train_seconds)
        needed = other + LEARNING_STEPS * per_step / (1.0 - min(val_share, 0.5))
        text += (
            f" At this run's speed ({per_step:.2f} s per step) about {LEARNING_STEPS} steps "
            f"need --max-minutes {math.ceil(needed / 60)}."
        )
    return text
