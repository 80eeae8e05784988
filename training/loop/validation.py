"""When to validate during a run, on which images, and what the final evaluation costs.

Validation takes real time on a CPU (full-size images; on a slow or busy machine it can
cost as much as the training), so a run plans it from *measured* time:

* before training, the smallest validation image is predicted once (``probe``): seconds
  per pixel of network work, on this machine, now;
* every validation refines that rate;
* the final evaluation (every image, exact metrics) is always run; its estimated cost is
  kept in reserve by a time budget (training/loop/optim.py ``StepBudget.reserve``);
* an in-budget validation is run only when it fits both the ``share`` of the elapsed time
  given to validation and the time left before that reserve. When the whole set does not
  fit, a subset that does is validated (images spread over the set, the same ones each
  time), or, when even a quarter of the set does not fit, none.

A subset's mIoU is reported (``metrics.csv`` ``val_images``) but never compared with full
validations to pick ``best.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from training.loop.epoch import EVAL_TILE, EVAL_TILE_OVERLAP, EVAL_TILE_THRESHOLD

# A validation this cheap runs whenever it fits in the time left, whatever the share says.
CHEAP_SECONDS = 2.0


def image_work(height: int, width: int) -> int:
    """Pixels the network processes to predict one image (tiles overlap on large ones)."""
    if height * width <= EVAL_TILE_THRESHOLD:
        return height * width
    stride = EVAL_TILE - EVAL_TILE_OVERLAP
    rows = math.ceil(max(height - EVAL_TILE_OVERLAP, 1) / stride)
    cols = math.ceil(max(width - EVAL_TILE_OVERLAP, 1) / stride)
    return rows * cols * min(height, EVAL_TILE) * min(width, EVAL_TILE)


def spread_order(count: int) -> list[int]:
    """``0..count-1`` ordered so that every prefix is spread over the range.

    Positions follow the base-2 van der Corput sequence (0, 1/2, 1/4, 3/4, ...): the first
    k images of a validation set sorted by name come from all over it, not from its start.
    """
    order: list[int] = []
    seen: set[int] = set()
    k = 0
    while len(order) < count and k < 4 * count + 8:
        fraction, denominator, n = 0.0, 1.0, k
        while n:
            denominator *= 2
            fraction += (n % 2) / denominator
            n //= 2
        index = int(fraction * count)
        if index not in seen:
            seen.add(index)
            order.append(index)
        k += 1
    return order + [i for i in range(count) if i not in seen]


class ValidationPlan:
    """Chooses what to validate after an epoch, from measured seconds per pixel of work.

    Args:
        sizes: ``(height, width)`` of each validation image.
        share: validation may take at most this share of the elapsed time (1.0: every epoch).
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], *, share: float) -> None:
        self.work = [image_work(h, w) for h, w in sizes]
        self.order = spread_order(len(self.work))
        self.share = share
        self.seconds_per_work: float | None = None
        self.count = 0  # validations run (in-budget and final)
        self.seconds = 0.0  # seconds they took

    def probe_index(self) -> int:
        """The image to time before training: the cheapest one."""
        return min(range(len(self.work)), key=self.work.__getitem__)

    def measured(self, seconds: float, indices: Sequence[int]) -> None:
        """Learn the rate from a timed prediction of ``indices`` (a probe or a validation)."""
        work = sum(self.work[i] for i in indices)
        if work and seconds > 0:
            self.seconds_per_work = seconds / work

    def spent(self, seconds: float, indices: Sequence[int]) -> None:
        """Record a validation of ``indices`` that took ``seconds``."""
        self.count += 1
        self.seconds += seconds
        self.measured(seconds, indices)

    def estimate(self, indices: Sequence[int] | None = None) -> float:
        """Seconds to validate ``indices`` (all images by default); 0 before any measurement."""
        chosen = range(len(self.work)) if indices is None else indices
        return (self.seconds_per_work or 0.0) * sum(self.work[i] for i in chosen)

    def choose(self, *, last: bool, elapsed: float, time_left: float | None) -> list[int]:
        """The images to validate now (sorted; ``[]``: skip this validation).

        Args:
            last: the run's final evaluation: every image, whatever it costs.
            elapsed: seconds the run has taken so far.
            time_left: seconds left before the time budget's reserve for the final evaluation,
                less one training step (None without a time budget).
        """
        everything = list(range(len(self.work)))
        if last or not everything:
            return everything
        allowance = math.inf if self.share >= 1.0 else self.share * elapsed - self.seconds
        full = self.estimate()
        if full < CHEAP_SECONDS:
            allowance = max(allowance, full)
        if time_left is not None:
            allowance = min(allowance, time_left)
        if full <= allowance:
            return everything
        chosen: list[int] = []
        cost = 0.0
        for index in self.order:
            cost += self.estimate([index])
            if cost > allowance:
                break
            chosen.append(index)
        return sorted(chosen) if len(chosen) >= math.ceil(len(everything) / 4) else []
